"""Compiles the hot-path modules listed in fastgw/native.py with mypyc (the rest is in pyproject.toml).

The source stays plain Python; mypyc turns each listed module into a C extension that Python imports
instead of the .py. The build environment has mypy but not fastgw's runtime dependencies: their types
are treated as Any (those calls are made the usual, dynamic way).
FASTGW_PURE_PYTHON=1 installs without compiling (no C compiler needed; slower).
"""

import importlib.util
import os
from pathlib import Path

from setuptools import setup

if os.environ.get("FASTGW_PURE_PYTHON") == "1":
    setup()
else:
    from mypyc.build import mypycify

    spec = importlib.util.spec_from_file_location("native", Path(__file__).parent / "fastgw" / "native.py")
    assert spec is not None and spec.loader is not None
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    # The project's own mypy settings (strict) are for checking, done by the test command with every
    # dependency installed; here they would turn the missing dependencies' Any types into errors.
    flags = ["--config-file", os.devnull, "--ignore-missing-imports", "--cache-dir", os.devnull]
    setup(ext_modules=mypycify([*flags, *native.source_paths()], opt_level="3"))
