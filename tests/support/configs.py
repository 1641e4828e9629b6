"""Config texts several tests start from."""

from __future__ import annotations

# The smallest valid config: one listener, one upstream, one public route, no access log.
MINIMAL = """
[[listeners]]
bind = "127.0.0.1:8080"
[access_log]
target = "off"
[upstreams.u]
targets = ["127.0.0.1:1"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
"""
