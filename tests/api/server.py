"""Start a real `pagelens serve` process (uvicorn) on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from pagelens.testing.servers import free_port

REAL_KEY = "real-server-key"  # the key of the session's real model server (tests/conftest.py)


def start_server(
    model_dir: Path, *, api_key: str, log_path: Path, extra_args: tuple[str, ...] = (), env: dict | None = None
) -> tuple[subprocess.Popen, str]:
    """Start a server and wait until it is healthy: `(process, base URL)`. Its data directory is
    `log_path.parent / "data"`; the caller stops the process."""
    port = free_port()
    command = [
        sys.executable, "-m", "pagelens.cli", "serve", "--model", str(model_dir), "--port", str(port),
        "--api-key", api_key, "--device", "cpu", "--dtype", "float32", *extra_args,
    ]  # fmt: skip
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PAGELENS_DATA_DIR": str(log_path.parent / "data"),
        **(env or {}),
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"server not healthy after 180 s: {log_path.read_text()[-3000:]}")
        time.sleep(0.3)


@contextmanager
def running_server(model_dir: Path, *, api_key: str, log_path: Path, extra_args: tuple[str, ...] = (), env=None):
    """Yield the base URL of a live server; stop it afterwards (its log is kept at `log_path`)."""
    process, base_url = start_server(model_dir, api_key=api_key, log_path=log_path, extra_args=extra_args, env=env)
    try:
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
