"""Running deskbell as real processes in tests: `serve` or `worker` as subprocesses with their
output in a file (a pipe would fill and block a busy server), killed or stopped for real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.fakes import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without any DESKBELL_* of its own, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DESKBELL_")}
    return {**base, **extra}


class Deskbell:
    """One `python -m deskbell ...` process. `port` given: it is an API server."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        workdir: Path,
        port: int | None = None,
        name: str = "deskbell",
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else ""
        self.log_path = workdir / f"{name}-{os.urandom(3).hex()}.log"
        self._client: httpx.Client | None = None
        env = dict(env)
        if port:
            env["DESKBELL_PORT"] = str(port)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "deskbell", *args],
                cwd=workdir,
                env=clean_env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def client(self) -> httpx.Client:
        """A client for this server, closed by `stop()`."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=10)
        return self._client

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"deskbell exited early ({self.process.returncode}):\n{self.output()}"
            )
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 30) -> Deskbell:
        if self.port:
            wait_until(self.healthy, timeout=timeout, what="deskbell to answer /healthz")
        else:
            wait_until(
                lambda: "worker_started" in self.output(), timeout=timeout, what="worker start"
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> str:
        """SIGTERM, wait, and everything it printed. Safe to call twice."""
        self.terminate()
        return self.output()


def run_to_exit(
    args: Sequence[str], *, env: Mapping[str, str], workdir: Path, timeout: float = 30
) -> tuple[int, str]:
    """A deskbell command expected to end by itself: (exit code, everything it printed)."""
    result = subprocess.run(
        [sys.executable, "-m", "deskbell", *args],
        cwd=workdir,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


async def post_many(
    base_url: str, bodies: Sequence[Mapping[str, object]], concurrency: int = 16
) -> list[str]:
    """POST every body concurrently; returns the ids in order. Any non-202 fails the test."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def post(body: Mapping[str, object]) -> str:
            async with gate:
                answer = await client.post("/v1/assistance-requests", json=body)
            assert answer.status_code == 202, answer.text
            return str(answer.json()["id"])

        return list(await asyncio.gather(*(post(b) for b in bodies)))
