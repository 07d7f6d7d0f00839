"""A real PostgreSQL on loopback for the session, started by ``scripts/postgres.sh``.

The script finds the server binaries (PATH, then the newest ``/usr/lib/postgresql/*/bin``; as root with
apt-get it installs the Debian package when there are none), makes a cluster with trust authentication
on 127.0.0.1 and a free port, and prints the URL. As root the server runs as the ``postgres`` user, in a
data directory that user owns. A server that cannot be had fails the tests that need it: they are about a
real PostgreSQL, so they are never skipped.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"


def _script(command: str, state: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command, str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/supply_agent`` of a server that lives for the session."""
    state = tmp_path_factory.mktemp("postgres")
    try:
        started = _script("start", state, timeout=600)  # 600: room for an apt-get install
    except subprocess.TimeoutExpired:
        _script("destroy", state, timeout=60)
        pytest.fail(f"{SCRIPT} start {state}: no server after 600 s", pytrace=False)
    lines = started.stdout.split()
    if started.returncode != 0 or not lines or not lines[-1].startswith("postgresql://"):
        _script("destroy", state, timeout=60)
        pytest.fail(
            f"{SCRIPT} start {state} failed (exit {started.returncode}):\n{started.stdout}{started.stderr}",
            pytrace=False,
        )
    try:
        yield lines[-1]
    finally:
        stopped = _script("destroy", state, timeout=60)
        if stopped.returncode != 0:
            # The tests have their results; a server left running is worth a word, not a failure.
            warnings.warn(f"{SCRIPT} destroy {state} failed:\n{stopped.stdout}{stopped.stderr}", stacklevel=1)


def fresh_database(server_url: str, name: str) -> str:
    """The URL of a new, empty database ``name`` on the server of ``server_url`` (dropped first if a
    test before left it)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    with psycopg.connect(url.set(database="postgres").render_as_string(False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(False)
