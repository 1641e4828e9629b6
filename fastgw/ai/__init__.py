"""The AI gateway: ``kind = "llm"`` routes that put one OpenAI- and Anthropic-compatible API in front of
every provider (DESIGN.md: a handler kind). ``adapter.py`` is the contract between the pieces."""
