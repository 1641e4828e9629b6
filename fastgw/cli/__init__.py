"""The ``fastgw`` command's subcommands, one module per command group; ``fastgw/__main__.py`` holds the
argument tree and dispatches here.

User mistakes (a bad config, a busy port) get one precise line on stderr and exit status 2, never a
traceback: a command raises ConfigError and ``main`` prints it.
"""
