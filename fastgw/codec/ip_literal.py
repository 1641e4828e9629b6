"""Whether a host string is an IP address literal rather than a name to look up.

One test for the upstream pools (a literal target needs no resolver), the store's PostgreSQL connect
(a literal host needs no bounded lookup) and the network policy (an X-Forwarded-For entry must be an
address): ``ipaddress`` decides, IPv4 and IPv6 alike, with no I/O."""

from __future__ import annotations

import ipaddress


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
