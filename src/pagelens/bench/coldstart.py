"""`pagelens bench coldstart`: process start -> first embedding served over HTTP, against the floor
of a fresh process that only imports colpali-engine and runs `from_pretrained` on the same model.

Both run as new Python processes, alternately, `repeats` times; the table shows each median.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pagelens.testing.servers import free_port

FLOOR_SCRIPT = """
import sys, time
started = float(sys.argv[2])
from pagelens.models.families import detect_family
from pagelens.models.checkpoints import resolve_checkpoint
checkpoint = resolve_checkpoint(sys.argv[1])
family = detect_family(checkpoint.config)
model_class, processor_class = family.classes()
family.from_pretrained(checkpoint.weights_dir, dtype="auto")
processor_class.from_pretrained(checkpoint.processor_dir)
print(time.time() - started)
"""


def floor_seconds(model: str) -> float:
    """A fresh process: import colpali-engine + from_pretrained (model and processor)."""
    started = time.time()
    output = subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, model, repr(started)], capture_output=True, text=True, check=True
    ).stdout
    return float(output.strip().splitlines()[-1])


def served_seconds(model: str, device: str) -> float:
    """A fresh `pagelens serve`: process start until the first /embeddings answer arrives."""
    port = free_port()
    command = [sys.executable, "-m", "pagelens.cli", "serve", "--model", model, "--port", str(port), "--device", device]
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/embeddings", json={"input_type": "text", "inputs": ["hi"]}, timeout=60
                )
                if response.status_code == 200:
                    return time.time() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)


def run(*, model: str | None = None, device: str = "cpu", repeats: int = 3) -> dict[str, float]:
    """Median seconds of each, and their ratio (bar, issue #4: served <= 1.3 x floor)."""
    with tempfile.TemporaryDirectory() as scratch:
        if model is None:
            from pagelens.testing import build_tiny_checkpoint

            model = str(build_tiny_checkpoint("colqwen2_5", Path(scratch) / "tiny"))
        floors, served = [], []
        for _ in range(repeats):
            floors.append(floor_seconds(model))
            served.append(served_seconds(model, device))
    floor, serve = statistics.median(floors), statistics.median(served)
    print(f"model {model}, device {device}, median of {repeats} fresh processes each")
    print(f"{'import + from_pretrained':40} {floor:7.2f} s")
    print(f"{'pagelens serve -> first embedding':40} {serve:7.2f} s")
    print(f"{'ratio':40} {serve / floor:7.2f}")
    return {"floor_s": floor, "served_s": serve, "ratio": serve / floor}
