"""Gateway configs with an llm route in front of the built-in demo provider (``[demo_upstream]``,
fastgw/ai/demo_provider.py): plain HTTP, no provider key, public models ``demo-chat`` and
``demo-embed``. For the end-to-end tests about who may reach what (consumers' model lists, policies'
refusals); the tests about providers' wire formats use llm_gateway.py's fakes instead.

``{port}`` and ``{log}`` are left in the text for ``gateway_factory`` to fill in.
"""

from __future__ import annotations


def demo_llm_config(demo: int, *, route: str, listener: str = "", extra: str = "") -> str:
    """The config: ``demo`` is the demo provider's port; ``route`` the llm route's own lines (its auth,
    limits, ...; it is named ``llm``, on ``/v1``); ``listener`` more lines for the listener (TLS);
    ``extra`` more tables (admin, keys, issuers, other routes)."""
    return f"""
[[listeners]]
bind = "127.0.0.1:{{port}}"
{listener}

[demo_upstream]
bind = "127.0.0.1:{demo}"

[upstreams.demo]
targets = ["127.0.0.1:{demo}"]

[[llm.providers]]
name = "demo"
kind = "openai"
upstream = "demo"
base_path = "/v1"

[[llm.models]]
name = "demo-chat"
targets = [{{ provider = "demo", model = "demo-chat" }}]

[[llm.models]]
name = "demo-embed"
targets = [{{ provider = "demo", model = "demo-embed" }}]

[[routes]]
name = "llm"
path = "/v1"
kind = "llm"
{route}
{extra}
"""
