"""`supply-agent serve` with no cluster starts a sandbox fleet in a process of its own: the agent's
processes reach it over HTTP only, and the fleet does not outlive the process that started it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_without_a_cluster_runs_its_fleet_apart_and_takes_it_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLY_AGENT_")}
    env |= {"SUPPLY_AGENT_DATA_DIR": str(tmp_path / "var"), "SUPPLY_AGENT_LOG_FORMAT": "json"}
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "supply_agent", "serve", "--port", str(port), "--sandbox-nodes", "6"]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _until("serve to be ready", ready, 120)
        kids = {c: _cmdline(c) for c in _children(proc.pid)}
        fleets = [c for c, line in kids.items() if "sandbox serve" in line]
        workers = [c for c, line in kids.items() if "supply_agent.cli.worker" in line]
        assert len(fleets) == 1 and len(workers) == 1, kids
        # The worker was handed the fleet's kubeconfig: it never starts (or imports) a fleet itself.
        assert "--kubeconfig" in kids[workers[0]] and "sandbox-nodes" not in kids[workers[0]]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _until("the fleet to stop with its parent", lambda: not _alive(fleets[0]), 20)
        _until("the worker to stop with its parent", lambda: not _alive(workers[0]), 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
