"""Real processes for tests and benchmarks: a private ``redis-server`` and a uvicorn worker.

Nothing is mocked: both run as subprocesses on free local ports, with their files in a
temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LOCALHOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 90.0
POLL_SECONDS = 0.1
STOP_TIMEOUT_SECONDS = 10.0
REDIS_BINARY = "redis-server"
SERVING_LOG_LINE = ":serving "  # service.checkpoints logs it once a worker is ready


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex((LOCALHOST, port)) == 0:
                return
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def _stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisProcess:
    """``redis-server`` without persistence on a free port, in ``folder``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        if shutil.which(REDIS_BINARY) is None:
            raise RuntimeError(f"{REDIS_BINARY} is not installed (apt-get install redis-server)")
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self) -> RedisProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            REDIS_BINARY, "--port", str(self.port), "--bind", LOCALHOST, "--save", "",
            "--appendonly", "no", "--dir", str(self.folder),
        ]  # fmt: skip
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port, START_TIMEOUT_SECONDS, self.process)
        return self

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as in a crash."""
        _stop(self.process, signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        _stop(self.process)


class ServiceProcess:
    """``python -m uvicorn --factory service.main:create_app`` with ``TAL_*`` settings in env;
    with ``workers`` > 1, ``python -m tal.cli serve --workers N`` (uvicorn's supervisor)."""

    def __init__(
        self, folder: Path, settings: dict[str, str], port: int | None = None, workers: int = 1
    ) -> None:
        self.folder = folder
        self.settings = settings
        self.port = port or free_port()
        self.workers = workers
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"service-{self.port}.log"

    def start(self) -> ServiceProcess:
        """Starts the process (returns at once; see :meth:`wait_ready`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings}
        command = [
            sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory",
            "--host", LOCALHOST, "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        if self.workers > 1:
            command = [
                sys.executable, "-m", "tal.cli", "serve", "--host", LOCALHOST,
                "--port", str(self.port), "--workers", str(self.workers), "--log-level", "warning",
            ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_listening(self, timeout: float = START_TIMEOUT_SECONDS) -> ServiceProcess:
        assert self.process is not None
        try:
            _wait_port(self.port, timeout, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; log:\n{self.log_path.read_text()[-4000:]}") from exc
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> ServiceProcess:
        """Polls ``/readyz`` until 200 and, with several workers sharing the port (any one of
        them answers), until each has logged that it serves."""
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=5).status_code == httpx.codes.OK
            except httpx.TransportError:
                ready = False
            if ready and self.log_path.read_text().count(SERVING_LOG_LINE) >= self.workers:
                return self
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"{self.url} not ready; log:\n{self.log_path.read_text()[-4000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """The exit status (negative: killed by that signal); TimeoutExpired when still alive."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        _stop(self.process)
