"""Handler kinds: routes served by an async handler instead of forwarded to an upstream (DESIGN.md).

Each kind is one module with its config spec and its ``compile``; ``registry.py`` names them.
"""
