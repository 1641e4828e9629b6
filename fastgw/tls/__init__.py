"""TLS: server contexts per listener (profiles, SNI, client certificates) and development certificates."""
