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


@contextmanager
def running_server(model_dir: Path, *, api_key: str, log_path: Path, extra_args: tuple[str, ...] = ()):
    """Yield the base URL of a live server; stop it afterwards (its log is kept at `log_path`)."""
    port = free_port()
    command = [
        sys.executable, "-m", "pagelens.cli", "serve", "--model", str(model_dir), "--port", str(port),
        "--api-key", api_key, "--device", "cpu", "--dtype", "float32", *extra_args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PAGELENS_DATA_DIR": str(log_path.parent / "data")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with {process.returncode}: {log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not healthy after 180 s: {log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
