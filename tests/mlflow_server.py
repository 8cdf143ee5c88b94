"""A real ``mlflow server`` subprocess for the integration tests: a free port on 127.0.0.1, its own
SQLite store and artifact root, in its own process group (it forks workers), stopped as a group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import pytest

Server = TypeVar("Server", bound="ServerProcess")

SERVER_START_TIMEOUT_S = 180  # a cold start (imports, schema migrations) on a busy 2-core box


class ServerProcess:
    """``mlflow server <extra_args> --backend-store-uri sqlite:///<root>/<db>`` on a free port;
    ``wait()`` blocks until ``/health`` answers."""

    def __init__(
        self,
        root: Path,
        db: str = "mlflow.db",
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        command = [
            str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "server", *extra_args,
            "--backend-store-uri", f"sqlite:///{root}/{db}",
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        # No background job runner (a third process, unused here) competing for the CPU.
        environment = {**(env if env is not None else os.environ)}
        environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
            )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait(self: Server) -> Server:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mlflow server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.25)
        return self

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # the server and the workers it forked
            self.proc.wait(timeout=60)
