"""Real servers for the end-to-end test: started on free loopback ports, polled with a deadline,
always stopped.

Each server logs to a file under the test's temporary directory; a failed wait quotes the end of
the logs, which is where a server says why it did not come up.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")
POLL_SECONDS = 0.5


def free_port() -> int:
    """A port nothing listens on now: the kernel's pick for port 0 on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str  # http://127.0.0.1:PORT

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Servers:
    """Starts servers and stops all of them, newest first, when the test ends."""

    directory: Path
    started: list[Server] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], port: int, ready_path: str) -> Server:
        log = self.directory / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT)
        server = Server(name, process, log, f"http://127.0.0.1:{port}")
        self.started.append(server)
        wait_until(lambda: answers(server, ready_path), 60, f"{name} to answer {ready_path}", self)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.started):
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()
        self.started.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} (exit {s.process.poll()}):\n{s.log_tail()}" for s in self.started)


def answers(server: Server, path: str) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
    try:
        return requests.get(server.url + path, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def wait_until(probe: Callable[[], T | None], timeout_seconds: float, what: str, servers: Servers) -> T:
    """Polls ``probe`` until it returns something truthy, or fails after the deadline with the
    servers' logs."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_seconds:.0f} s for {what}\n{servers.logs()}")
        time.sleep(POLL_SECONDS)
