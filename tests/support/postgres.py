"""A real PostgreSQL for the tests of the shared store: ``initdb`` and ``pg_ctl`` into a temporary
directory, listening on 127.0.0.1 on a free port, no system service. One server per test session; each
test gets its own database (``create_database``), so tests never see each other's rows.

The binaries are found on PATH or where Debian's ``postgresql`` package puts them
(/usr/lib/postgresql/VERSION/bin, newest first). A missing PostgreSQL fails the test, never skips it.
PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user (made by the Debian
package) or else ``nobody``, in a directory given to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from tests.support.ports import free_port

USER = "fastgw"  # the database superuser initdb creates (trust authentication, loopback only)
START_SECONDS = 30  # pg_ctl -w waits this long for the server to accept connections


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl. Raises AssertionError when there is none."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=os.path.dirname(found)):
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    raise AssertionError(
        "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
        "run scripts/dev.sh system test"
    )


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise AssertionError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL")


class PostgresServer:
    """A PostgreSQL server of its own: ``stop``/``start`` simulate an outage, ``close`` removes it all."""

    __test__ = False

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="fastgw-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self._user = _run_as()
        self._databases = 0
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self._command(
            "initdb",
            *("-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"),
        )
        self.start()

    def _command(self, name: str, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bindir / name), *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=START_SECONDS + 30,
            check=False,
            **kwargs,
        )
        if done.returncode != 0:
            server_log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{name} failed ({done.returncode}): {done.stderr}{done.stdout}{server_log}")

    def dsn(self, database: str = "postgres", **extra: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in extra.items())
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._command(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_SECONDS),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """A fast shutdown: sessions are ended, clients see their connections drop. ``immediate``: the
        server dies at once, without a shutdown checkpoint, as a kill leaves it (it recovers at start)."""
        self._command("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
