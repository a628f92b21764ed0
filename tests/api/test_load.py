"""Bounded load tests against a real uvicorn process on loopback: 64 concurrent clients mixing
image and text requests. Zero 5xx, zero lost or mismatched items, 429 only when the queue is full.

PAGELENS_LOAD_SECONDS sets the duration (default 30). Run with `-s` to see p50/p95 latencies.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from collections import Counter

import httpx
import numpy as np

from tests.api.conftest import REAL_HEADERS
from tests.api.server import REAL_KEY, running_server
from tests.conftest import encode, make_page

CLIENTS = 64
SECONDS = float(os.environ.get("PAGELENS_LOAD_SECONDS", "30"))
IMAGES = [base64.b64encode(encode(make_page(160 + 20 * i, 200, 100 + i))).decode() for i in range(6)]
TEXTS = [f"query {i} about " + "revenue and tables " * (i % 4) for i in range(8)]


def _parse(body: bytes) -> list[np.ndarray]:
    data = np.load(io.BytesIO(body), allow_pickle=False)
    return [data[f"emb_{i}"] for i in range(int(data["count"]))]


def _expected_vectors(base_url: str) -> dict[tuple[str, int], np.ndarray]:
    """Each pool input embedded alone, before any load."""
    expected = {}
    with httpx.Client(base_url=base_url, headers=REAL_HEADERS, timeout=60) as client:
        for kind, pool in (("image", IMAGES), ("text", TEXTS)):
            for index, value in enumerate(pool):
                response = client.post("/embeddings", json={"input_type": kind, "inputs": [value]})
                expected[kind, index] = _parse(response.content)[0]
    return expected


def _hammer(base_url: str, seconds: float, expected=None) -> dict:
    """CLIENTS threads posting random requests until the deadline; returns statuses, latencies, problems."""
    deadline = time.monotonic() + seconds
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    problems: list[str] = []
    retry_after_missing = 0
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        nonlocal retry_after_missing
        rng = random.Random(number)
        with httpx.Client(base_url=base_url, headers=REAL_HEADERS, timeout=60) as client:
            while time.monotonic() < deadline:
                kind = "image" if rng.random() < 0.5 else "text"
                pool = IMAGES if kind == "image" else TEXTS
                picks = [rng.randrange(len(pool)) for _ in range(rng.randint(1, 2 if kind == "image" else 4))]
                started = time.perf_counter()
                try:
                    response = client.post("/embeddings", json={"input_type": kind, "inputs": [pool[i] for i in picks]})
                except httpx.HTTPError as error:
                    with lock:
                        problems.append(f"transport error: {error!r}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    if response.status_code == 429 and "retry-after" not in response.headers:
                        retry_after_missing += 1
                if response.status_code == 429:
                    time.sleep(float(response.headers.get("retry-after", "1")) * 0.1)
                if response.status_code != 200 or expected is None:
                    continue
                vectors = _parse(response.content)
                if len(vectors) != len(picks):
                    with lock:
                        problems.append(f"{len(picks)} inputs, {len(vectors)} outputs")
                    continue
                for pick, got in zip(picks, vectors, strict=True):
                    want = expected[kind, pick]
                    if got.shape != want.shape or np.abs(got - want).max() > 1e-4:
                        with lock:
                            problems.append(f"{kind} {pick}: mismatched vectors")

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    latencies.sort()
    return {
        "statuses": statuses,
        "problems": problems,
        "retry_after_missing": retry_after_missing,
        "p50": latencies[len(latencies) // 2] if latencies else float("nan"),
        "p95": latencies[int(len(latencies) * 0.95)] if latencies else float("nan"),
        "requests": sum(statuses.values()),
    }


def test_sixty_four_clients_for_thirty_seconds(server):
    expected = _expected_vectors(server)
    result = _hammer(server, SECONDS, expected)
    print(
        f"\nload: {CLIENTS} clients x {SECONDS:.0f} s: {result['requests']} requests, "
        f"statuses {dict(result['statuses'])}, p50 {result['p50'] * 1000:.0f} ms, p95 {result['p95'] * 1000:.0f} ms"
    )
    assert result["problems"] == []
    assert not [status for status in result["statuses"] if status >= 500]
    assert result["statuses"][429] == 0, "429 while the queue (1024 items) could not be full"
    assert result["statuses"][200] == result["requests"] > CLIENTS
    assert httpx.get(f"{server}/health").status_code == 200


def test_small_queue_answers_429_with_retry_after_and_never_5xx(tiny_model, tmp_path):
    os.environ["PAGELENS_MAX_QUEUED_ITEMS"] = "8"
    try:
        with running_server(tiny_model, api_key=REAL_KEY, log_path=tmp_path / "server.log") as url:
            result = _hammer(url, min(SECONDS, 10))
            assert httpx.get(f"{url}/health").status_code == 200
    finally:
        del os.environ["PAGELENS_MAX_QUEUED_ITEMS"]
    print(f"\nsmall queue: statuses {dict(result['statuses'])}")
    assert result["problems"] == []
    assert set(result["statuses"]) <= {200, 429}
    assert result["statuses"][429] > 0 and result["statuses"][200] > 0
    assert result["retry_after_missing"] == 0
