"""A throw-away PostgreSQL cluster for tests and benchmarks: ``initdb`` and ``pg_ctl`` in a
temporary folder, on a free loopback port, so nothing has to run beforehand (CI starts from a
fresh clone).

Debian's ``postgresql`` package (installed by ``make setup``) provides the binaries under
``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root, and CI runs as root: then
the cluster's folder is given to the ``postgres`` system user and every command runs as that user
(``runuser``). Authentication is ``trust`` on loopback only; the cluster lives as long as the
context.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "sterling"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (install Debian's ``postgresql``: ``make setup`` does)."""


def server_binaries() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``pg_ctl``."""
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresUnavailable(f"no PostgreSQL server under {root}: install Debian's postgresql (make setup does)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    """A running throw-away cluster."""

    host: str
    port: int
    folder: Path

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL (a fresh one per test keeps tests apart)."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=self.host, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # the name is ours: hex or the caller's literal
        return self.url(name)


@contextlib.contextmanager
def throwaway_cluster(*, max_connections: int = 200) -> Iterator[Cluster]:
    """Start a cluster in a temporary folder; stop it and delete the folder at exit.

    Raises:
        PostgresUnavailable: no server binaries here.
        subprocess.CalledProcessError: ``initdb`` or ``pg_ctl`` failed (its output is in the error).
    """
    binaries = server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="sterling-pg-"))
    data, sockets = folder / "data", folder / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (folder, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections={max_connections} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # throw-away: speed over durability
        )
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "-t", "60", "start")
        try:
            yield Cluster(host="127.0.0.1", port=port, folder=folder)
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


TEST_DATABASE_ENV = "STERLING_TEST_DATABASE"
"""``postgresql`` makes :func:`index_url` hand out PostgreSQL databases (``make test`` runs the
index and gateway suites once more that way); anything else, or unset, SQLite files."""

_shared: list[tuple[contextlib.ExitStack, Cluster]] = []


def shared_cluster() -> Cluster:
    """One cluster for the whole test run, started on first use and stopped when the process exits."""
    if not _shared:
        import atexit

        stack = contextlib.ExitStack()
        cluster = stack.enter_context(throwaway_cluster())
        atexit.register(stack.close)
        _shared.append((stack, cluster))
    return _shared[0][1]


def index_url(folder: Path) -> str:
    """Where a test's chain index lives: a SQLite file in ``folder``, or, when
    :data:`TEST_DATABASE_ENV` says ``postgresql``, a fresh database of the shared cluster."""
    if os.environ.get(TEST_DATABASE_ENV, "").lower() in ("postgres", "postgresql"):
        return shared_cluster().create_database()
    from oracle.index_db import default_url

    return default_url(folder)
