"""An ASGI app served on 127.0.0.1 and a free port, in a background thread, as a context manager.

The cassette proxy serves the LLM SDKs through it, and the tests' LLM stub does the same.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn


class LoopbackServer:
    def __init__(self, app: Any, name: str = "loopback") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", loop="asyncio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True, name=name
        )

    def start(self, timeout_s: float = 10.0) -> None:
        """Serve; return once the server accepts connections (RuntimeError if it cannot start)."""
        self._thread.start()
        for _ in range(int(timeout_s / 0.01)):
            if self._server.started:
                return
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        self.stop()
        raise RuntimeError(f"the {self.name} server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()
