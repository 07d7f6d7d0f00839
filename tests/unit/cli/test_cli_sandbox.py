"""The ``supply-agent sandbox`` commands as subprocesses: serve, inject, alerts, clock, snapshot, restore,
and shutdown on SIGTERM and SIGINT.

One server (module scope) serves the command tests; the signal tests start their own. Every server is
killed in a ``finally``. Tests marked ``xfail(strict=True)`` assert the intended behaviour where the
CLI differs today; each reason says how.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "supply_agent.cli"]
READY_PREFIX = "ready https://127.0.0.1:"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
SERVE_ARGS = ["--nodes", "6", "--pools", "2", "--seed", "1", "--port", "0", "--clock", "manual"]
XID_ALERTS = {"GPUFallenOffBus", "GPUXidError"}


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SUPPLY_AGENT_LOG_FORMAT="json",
        SUPPLY_AGENT_DATA_DIR=str(home / "var"),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    return env


@dataclass
class Served:
    """A ``sandbox serve`` subprocess, its stdout read line by line on a thread (None marks EOF)."""

    proc: subprocess.Popen[str]
    kubeconfig: Path
    home: Path
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    ready_line: str = ""

    @property
    def url(self) -> str:
        return self.ready_line.split()[1]

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line (None at EOF); raises queue.Empty past the deadline."""
        return self.lines.get(timeout=timeout)

    def rest_of_stdout(self, timeout: float = 2.0) -> list[str]:
        """Every line still to come, up to EOF (the process must be exiting)."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while (line := self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))) is not None:
            out.append(line)
        return out

    def stderr(self) -> str:
        return (self.home / "serve.stderr").read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


def start_server(home: Path) -> Served:
    """Start ``sandbox serve`` and wait, with a deadline, for its ready line. The caller kills it."""
    home.mkdir(parents=True, exist_ok=True)
    kubeconfig = home / "fleet.kubeconfig"
    with (home / "serve.stderr").open("w") as err:
        proc = subprocess.Popen(
            [*CLI, "sandbox", "serve", *SERVE_ARGS, "--kubeconfig", str(kubeconfig)],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=home,
            env=_env(home),
        )
    served = Served(proc, kubeconfig, home)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.put(line.rstrip("\n"))
        served.lines.put(None)

    threading.Thread(target=pump, name="serve-stdout", daemon=True).start()
    try:
        line = served.next_line(START_TIMEOUT)
    except queue.Empty:
        served.kill()
        pytest.fail(f"`sandbox serve` printed nothing in {START_TIMEOUT:.0f}s; stderr:\n{served.stderr()}")
    if line is None:
        served.kill()
        pytest.fail(
            f"`sandbox serve` exited {proc.returncode} before it was ready; stderr:\n{served.stderr()}"
        )
    served.ready_line = line
    return served


def cli(served: Served, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``supply-agent sandbox COMMAND --kubeconfig K ARGS...``."""
    command, *rest = args
    return subprocess.run(
        [*CLI, "sandbox", command, "--kubeconfig", str(served.kubeconfig), *rest],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=served.home,
        env=_env(served.home),
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args[3:]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def ssl_context(kubeconfig: Path) -> ssl.SSLContext:
    cfg = yaml.safe_load(kubeconfig.read_text())
    ca = base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    return ssl.create_default_context(cadata=ca)


def gpu_healthy(core: client.CoreV1Api, node: str) -> str:
    conds = core.read_node(node).status.conditions or []
    return next(c.status for c in conds if c.type == "GpuHealthy")


def clock_of(served: Served) -> datetime:
    stamp, mode = ok(cli(served, "clock")).split()
    assert mode == "(manual)"
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = start_server(tmp_path_factory.mktemp("serve"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def core(served: Served) -> Iterator[client.CoreV1Api]:
    api = config.new_client_from_config(config_file=str(served.kubeconfig))
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


@pytest.fixture
def node(core: client.CoreV1Api) -> str:
    return sorted(n.metadata.name for n in core.list_node().items)[0]


@pytest.fixture
def cleared(served: Served) -> Iterator[None]:
    """Leave no fault behind for the next test."""
    try:
        yield
    finally:
        cli(served, "inject", "clear")


# -- serve -----------------------------------------------------------------------------------------
def test_serve_prints_one_ready_line_once_it_accepts_connections(served: Served) -> None:
    line = served.ready_line
    assert line.startswith(READY_PREFIX), line
    assert f"kubeconfig={served.kubeconfig}" in line
    assert "nodes=6" in line.split()
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2):  # no retry: ready means accepting
        pass
    token = yaml.safe_load(served.kubeconfig.read_text())["users"][0]["user"]["token"]
    req = urllib.request.Request(f"{served.url}/version", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5, context=ssl_context(served.kubeconfig)) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["major"] == "1"
    with pytest.raises(queue.Empty):
        served.next_line(0.3)  # nothing else on stdout (the logs go to stderr)
    assert served.proc.poll() is None


def test_kubeconfig_is_private_and_works(served: Served, core: client.CoreV1Api) -> None:
    assert stat.S_IMODE(served.kubeconfig.stat().st_mode) == 0o600
    cfg = yaml.safe_load(served.kubeconfig.read_text())
    assert cfg["clusters"][0]["cluster"]["server"] == served.url
    nodes = core.list_node().items
    assert len(nodes) == 6
    pools = {n.metadata.labels["supply-agent.io/pool"] for n in nodes}
    assert len(pools) == 2


@pytest.mark.parametrize("path", ["/api/v1/nodes", "/apis/apps/v1/deployments", "/sandbox/v1/clock"])
@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_request_without_the_token_is_401_with_a_status(served: Served, path: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(served.url + path, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5, context=ssl_context(served.kubeconfig))
    assert exc.value.code == 401
    assert exc.value.headers.get_content_type() == "application/json"
    body = json.loads(exc.value.read())
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


# -- inject, alerts, clear -------------------------------------------------------------------------
@pytest.mark.usefixtures("cleared")
def test_inject_xid_turns_gpu_unhealthy_and_fires_alerts(
    served: Served, core: client.CoreV1Api, node: str
) -> None:
    assert gpu_healthy(core, node) == "True"
    out = ok(cli(served, "inject", "xid", "--node", node, "--gpu", "2", "--code", "79"))
    assert f"xid on {node} gpu=2 xid=79" in out
    assert eventually(lambda: gpu_healthy(core, node) == "False")

    bodies = json.loads(ok(cli(served, "alerts", "--format", "alertmanager")))
    assert isinstance(bodies, list) and bodies
    for body in bodies:
        assert body["version"] == "4"
        assert {
            "receiver",
            "status",
            "alerts",
            "groupLabels",
            "commonLabels",
            "externalURL",
            "groupKey",
        } <= set(body)
    alerts = [a for body in bodies for a in body["alerts"]]
    ours = [a for a in alerts if a["labels"]["alertname"] in XID_ALERTS and a["labels"].get("node") == node]
    assert ours, f"no GPUFallenOffBus/GPUXidError alert for {node} in {[a['labels'] for a in alerts]}"
    assert all(a["status"] == "firing" for a in ours)
    assert {a["labels"].get("gpu") for a in ours} == {"2"}

    hooks = json.loads(ok(cli(served, "alerts", "--format", "pagerduty")))
    assert isinstance(hooks, list) and len(hooks) == len(alerts)
    for hook in hooks:
        event = hook["event"]
        assert event["event_type"] == "incident.triggered"
        assert event["resource_type"] == "incident"
        assert {"id", "occurred_at", "data"} <= set(event)
        assert event["data"]["type"] == "incident"
        assert event["data"]["status"] == "triggered"
    assert any(node in hook["event"]["data"]["title"] for hook in hooks)


def test_inject_on_an_unknown_node_fails_naming_it(served: Served) -> None:
    result = cli(served, "inject", "xid", "--node", "no-such-node", "--gpu", "0", "--code", "79")
    assert result.returncode != 0
    assert "no-such-node" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(ok(cli(served, "alerts"))) == []


def test_inject_xid_without_code_is_a_usage_error(served: Served, node: str) -> None:
    result = cli(served, "inject", "xid", "--node", node, "--gpu", "0")
    assert result.returncode == 2
    assert "--code" in result.stderr
    assert "Usage:" in result.stderr


def test_inject_clear_clears(served: Served, core: client.CoreV1Api, node: str) -> None:
    try:
        ok(cli(served, "inject", "xid", "--node", node, "--gpu", "1", "--code", "79"))
        assert eventually(lambda: gpu_healthy(core, node) == "False")
        assert json.loads(ok(cli(served, "alerts")))
    finally:
        out = ok(cli(served, "inject", "clear"))
    assert out.strip() == "cleared 1 fault(s)"
    assert eventually(lambda: gpu_healthy(core, node) == "True")
    assert json.loads(ok(cli(served, "alerts", "--format", "alertmanager"))) == []
    assert json.loads(ok(cli(served, "alerts", "--format", "pagerduty"))) == []
    assert ok(cli(served, "inject", "clear")).strip() == "cleared 0 fault(s)"


# -- clock, snapshot, restore ----------------------------------------------------------------------
def test_clock_advance_moves_the_clock(served: Served) -> None:
    before = clock_of(served)
    out = ok(cli(served, "clock", "--advance", "60"))
    stamp, mode = out.split()
    assert mode == "(manual)"
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) == before + timedelta(seconds=60)
    time.sleep(1.1)
    assert clock_of(served) == before + timedelta(seconds=60)  # a manual clock stays put


def test_snapshot_then_restore_round_trips(served: Served, core: client.CoreV1Api, tmp_path: Path) -> None:
    names = sorted(n.metadata.name for n in core.list_node().items)
    target = names[-1]
    snap = tmp_path / "world.json"
    try:
        core.patch_node(target, {"spec": {"unschedulable": True}})
        out = ok(cli(served, "snapshot", "--out", str(snap)))
        assert out.startswith(f"wrote snapshot to {snap}")
        data = json.loads(snap.read_text())
        assert data["format"] == "supply-agent-fleet/v1"

        core.patch_node(target, {"spec": {"unschedulable": None}})
        assert not core.read_node(target).spec.unschedulable

        result = subprocess.run(
            [*CLI, "sandbox", "restore", "--kubeconfig", str(served.kubeconfig), str(snap)],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            cwd=served.home,
            env=_env(served.home),
        )
        assert ok(result).startswith("restored 6 nodes")
        nodes = {n.metadata.name: n for n in core.list_node().items}
        assert sorted(nodes) == names
        assert nodes[target].spec.unschedulable is True
        assert not any(n.spec.unschedulable for name, n in nodes.items() if name != target)
    finally:
        core.patch_node(target, {"spec": {"unschedulable": None}})


def test_missing_kubeconfig_is_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.kubeconfig"
    result = subprocess.run(
        [*CLI, "sandbox", "inject", "--kubeconfig", str(missing), "clear"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env=_env(tmp_path),
    )
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# -- shutdown --------------------------------------------------------------------------------------
@dataclass
class Stopped:
    seconds: float | None  # None: still running STOP_TIMEOUT after the signal
    returncode: int | None
    port: int
    extra_stdout: list[str]
    stderr: str


_stopped: dict[str, Stopped] = {}


def stop_with(sig: signal.Signals, home: Path) -> Stopped:
    """Start a server, send ``sig`` once it is ready, and record how it ended (memoised per signal)."""
    if sig.name not in _stopped:
        server = start_server(home)
        try:
            port = int(server.url.rsplit(":", 1)[1])
            t0 = time.monotonic()
            server.proc.send_signal(sig)
            try:
                server.proc.wait(timeout=STOP_TIMEOUT)
                seconds: float | None = time.monotonic() - t0
                extra = server.rest_of_stdout()
            except subprocess.TimeoutExpired:
                seconds, extra = None, []
            _stopped[sig.name] = Stopped(seconds, server.proc.returncode, port, extra, server.stderr())
        finally:
            server.kill()
    return _stopped[sig.name]


SIGNALS = [signal.SIGTERM, signal.SIGINT]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_signal_stops_the_server_promptly(sig: signal.Signals, tmp_path: Path) -> None:
    stopped = stop_with(sig, tmp_path)
    assert stopped.seconds is not None, f"still running {STOP_TIMEOUT}s after {sig.name}"
    assert stopped.seconds < STOP_TIMEOUT
    assert stopped.extra_stdout == [], "stdout after the ready line"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", stopped.port), timeout=1).close()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_signal_exit_status_is_zero(sig: signal.Signals, tmp_path: Path) -> None:
    stopped = stop_with(sig, tmp_path)
    assert stopped.returncode == 0, f"{sig.name}: exit status {stopped.returncode}; stderr:\n{stopped.stderr}"
    assert "fleet stopped" in stopped.stderr
