"""Measure a live server's memory and /health latency while it handles adversarial bodies.

    ./scripts/uv.sh run --frozen python -m tests.api.memory_probe MODEL_DIR [case ...]

Cases, each on a fresh server: `bilevel` (requests of bilevel PNGs, an 8000x8000 one ~256 MB once
decoded to RGB: 1, 2 (128 Mpx), 6 of 5000x5000 (150 Mpx), 8 (512 Mpx), 2 from 4 clients at once),
`json60` (~60 MB of base64 strings that are no images), `valid60` (~60 MB of 600x800 noise PNGs),
`one60` (one ~60 MB base64 noise PNG),
`score60` (~60 MB of page embeddings as nested lists to /score). `PROBE_SERVER_ENV="A=1 B=2"` sets
variables of the server (e.g. MALLOC_ARENA_MAX=2).
Prints, per case, the server's RSS before, its peak (VmHWM, reset before the case), its RSS after
the burst, and the slowest /health answer seen meanwhile. The regression tests in
tests/api/test_memory_real_server.py use the same helpers.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from PIL import Image

from pagelens.bench.proc_status import memory_status

MB = 1024 * 1024


def reset_peak(pid: int) -> bool:
    """Reset VmHWM of `pid` to its current RSS (writing 5 to /proc/<pid>/clear_refs); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def bilevel_png(width: int, height: int) -> bytes:
    """A mode "1" PNG of width x height: a few KB compressed, width * height * 4 bytes once decoded to RGB."""
    image = Image.new("1", (width, height), 1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class HealthWatch:
    """Polls `/health` from a thread until stopped, recording the slowest answer (seconds) and
    failures; samples the RSS of process `pid` every 20 ms meanwhile (its max in `max_rss`)."""

    base_url: str
    pid: int
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)
    max_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> HealthWatch:
        def sample():
            while not self._stop.is_set():
                self.max_rss = max(self.max_rss, memory_status(self.pid)["VmRSS"])
                self._stop.wait(0.02)

        def poll():
            with httpx.Client(base_url=self.base_url, timeout=10) as client:
                while not self._stop.is_set():
                    started = time.perf_counter()
                    try:
                        status = client.get("/health").status_code
                        if status != 200:
                            self.failures.append(f"status {status}")
                    except httpx.HTTPError as error:
                        self.failures.append(repr(error))
                    self.slowest = max(self.slowest, time.perf_counter() - started)
                    self._stop.wait(0.05)

        self._threads = [threading.Thread(target=target, daemon=True) for target in (poll, sample)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@dataclass
class Burst:
    """What one case did to the server: statuses, RSS before/peak/after (bytes), slowest /health (s)."""

    statuses: list[int]
    before: int
    peak: int
    after: int
    slowest_health: float
    health_failures: list[str]

    def line(self, name: str) -> str:
        return (
            f"{name}: statuses={self.statuses} rss_before={self.before / MB:.0f}MB peak={self.peak / MB:.0f}MB "
            f"rss_after={self.after / MB:.0f}MB slowest_health={self.slowest_health * 1000:.0f}ms"
            + (f" health_failures={self.health_failures[:3]}" if self.health_failures else "")
        )


def burst(pid: int, base_url: str, send, *, settle: float = 1.0) -> Burst:
    """Run `send(client) -> [status, ...]` against the server `pid` serves at `base_url`, watching its memory."""
    before = memory_status(pid)["VmRSS"]
    exact_peak = reset_peak(pid)
    with HealthWatch(base_url, pid) as watch, httpx.Client(base_url=base_url, timeout=300) as client:
        statuses = send(client)
    time.sleep(settle)
    memory = memory_status(pid)
    peak = max(memory["VmHWM"] if exact_peak else 0, watch.max_rss)
    return Burst(statuses, before, peak, memory["VmRSS"], watch.slowest, watch.failures)


def images_sender(headers: dict, inputs: list[str]):
    """A sender posting `inputs` as one morphik image request. The body is encoded here, once: encoding
    60 MB while sending would hold this process's GIL and delay its own /health polls."""
    body = orjson.dumps({"input_type": "image", "inputs": inputs})
    headers = {**headers, "Content-Type": "application/json"}

    def send(client: httpx.Client) -> list[int]:
        return [client.post("/embeddings", content=body, headers=headers).status_code]

    return send


def bilevel_request(headers: dict, *, count: int, side: int = 8000):
    """A sender posting `count` side x side bilevel PNGs in one morphik request."""
    inputs = [base64.b64encode(bilevel_png(side, side)).decode()] * count

    return images_sender(headers, inputs)


def concurrently(send, clients: int):
    """A sender running `send` from `clients` threads at once (each with its own connection)."""

    def send_all(client: httpx.Client) -> list[int]:
        from concurrent.futures import ThreadPoolExecutor

        def one(_):
            with httpx.Client(base_url=client.base_url, timeout=300) as own:
                return send(own)

        with ThreadPoolExecutor(clients) as pool:
            return [status for statuses in pool.map(one, range(clients)) for status in statuses]

    return send_all


def json_request(headers: dict, *, total_bytes: int = 60 * MB, count: int = 256, valid_first: bool = False):
    """A sender posting ~`total_bytes` of JSON: `count` base64 strings of random bytes (not images: a 400)."""
    import os

    each = total_bytes * 3 // 4 // count
    inputs = [base64.b64encode(os.urandom(each)).decode() for _ in range(count)]
    body = ('{"input_type": "image", "inputs": ["' + '", "'.join(inputs) + '"]}').encode()

    def send(client: httpx.Client) -> list[int]:
        return [
            client.post(
                "/embeddings", content=body, headers={**headers, "Content-Type": "application/json"}
            ).status_code
        ]

    return send


def score_request(headers: dict, *, total_bytes: int = 60 * MB, dim: int = 128):
    """A sender posting ~`total_bytes` of JSON to /score: page embeddings as nested float lists."""
    import numpy as np

    rng = np.random.default_rng(0)
    row = "[" + ",".join(f"{value:.6f}" for value in rng.standard_normal(dim)) + "]"
    rows_per_page = 700
    page = "[" + ",".join([row] * rows_per_page) + "]"
    pages = max(1, total_bytes // len(page))
    body = ('{"query": "revenue", "embeddings": [' + ",".join([page] * pages) + "]}").encode()

    def send(client: httpx.Client) -> list[int]:
        return [
            client.post("/score", content=body, headers={**headers, "Content-Type": "application/json"}).status_code
        ]

    return send


def valid_images_request(headers: dict, *, total_bytes: int = 60 * MB):
    """A sender posting ~`total_bytes` of JSON: noise PNGs of 600x800 (each ~1.4 MB), all valid."""
    import numpy as np

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, size=(800, 600, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    one = base64.b64encode(buffer.getvalue()).decode()
    inputs = [one] * max(1, total_bytes // len(one))

    return images_sender(headers, inputs)


def one_big_image_request(headers: dict, *, total_bytes: int = 60 * MB):
    """A sender posting one noise PNG whose base64 is ~`total_bytes` (~15 Mpx of RGB noise for 60 MB)."""
    import numpy as np

    side = int((total_bytes * 3 / 4 / 3) ** 0.5)
    noise = np.random.default_rng(0).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buffer, format="PNG", compress_level=1)
    inputs = [base64.b64encode(buffer.getvalue()).decode()]

    return images_sender(headers, inputs)


def main(argv: list[str]) -> None:
    from tests.api.server import start_server

    model_dir = Path(argv[0])
    cases = argv[1:] or ["bilevel", "json60"]
    key = "probe-key"
    headers = {"Authorization": f"Bearer {key}"}
    with tempfile.TemporaryDirectory() as scratch:
        log_path = Path(scratch) / "server.log"
        for case in cases:  # a fresh server per case: freed-but-kept memory of one case hides the next's
            env = dict(item.split("=", 1) for item in os.environ.get("PROBE_SERVER_ENV", "").split() if item)
            process, base_url = start_server(
                model_dir, api_key=key, log_path=log_path, extra_args=("--log-level", "warning"), env=env
            )
            print(f"idle server: {memory_status(process.pid)['VmRSS'] / MB:.0f}MB", flush=True)
            try:
                if case == "bilevel":
                    for count, side in ((1, 8000), (2, 8000), (6, 5000), (8, 8000)):
                        result = burst(process.pid, base_url, bilevel_request(headers, count=count, side=side))
                        print(result.line(f"bilevel x{count} ({side}x{side})"), flush=True)
                    result = burst(process.pid, base_url, concurrently(bilevel_request(headers, count=2), 4))
                    print(result.line("bilevel x2 (8000x8000) from 4 clients at once"), flush=True)
                elif case == "json60":
                    for _ in range(2):
                        result = burst(process.pid, base_url, json_request(headers))
                        print(result.line("json 60 MB of base64 (not images)"), flush=True)
                elif case == "valid60":
                    for _ in range(2):
                        result = burst(process.pid, base_url, valid_images_request(headers))
                        print(result.line("json 60 MB of 600x800 noise PNGs"), flush=True)
                elif case == "one60":
                    for _ in range(2):
                        result = burst(process.pid, base_url, one_big_image_request(headers))
                        print(result.line("json 60 MB: one noise PNG"), flush=True)
                elif case == "score60":
                    for _ in range(2):
                        result = burst(process.pid, base_url, score_request(headers))
                        print(result.line("json 60 MB of /score embeddings"), flush=True)
                else:
                    raise SystemExit(f"unknown case {case!r}")
            finally:
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main(sys.argv[1:])
