"""`pagelens bench latency`: seed 004's cold-start / warm-latency report against a running server.

The first request measures the cold start (on Modal: container start or snapshot restore plus the
request); `num_warmup` more measure warm latency; with `test_scaledown`, after `scaledown_wait`
idle seconds one more request measures the cold start after scale-down. Every request is seed
004's `/embed` with one generated page and one query.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pagelens.bench.models import synthetic_page


def _payload() -> dict[str, Any]:
    buffer = io.BytesIO()
    synthetic_page(0).save(buffer, format="PNG")
    return {"images": [base64.b64encode(buffer.getvalue()).decode()], "texts": ["What is the total?"]}


def run(
    *,
    url: str,
    api_key: str | None = None,
    num_warmup: int = 10,
    test_scaledown: bool = False,
    scaledown_wait: float = 65.0,
    out: Path | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Measure, print a table, and return (and optionally write) seed 004's report."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    payload = _payload()

    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:

        def timed_request() -> float:
            started = time.perf_counter()
            response = client.post("/embed", json=payload)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"/embed answered {response.status_code}: {response.text[:300]}")
            return elapsed

        cold = timed_request()
        warm = [timed_request() for _ in range(num_warmup)]
        post_scaledown = None
        if test_scaledown:
            time.sleep(scaledown_wait)
            post_scaledown = timed_request()

    warm_array = np.array(warm) if warm else np.array([float("nan")])
    report: dict[str, Any] = {
        "deployment_name": url,
        "cold_start_ms": round(cold, 1),
        "warm_start_avg_ms": round(float(warm_array.mean()), 1),
        "warm_start_p50_ms": round(float(np.percentile(warm_array, 50)), 1),
        "warm_start_p95_ms": round(float(np.percentile(warm_array, 95)), 1),
        "post_scaledown_cold_start_ms": None if post_scaledown is None else round(post_scaledown, 1),
        "num_warmup": num_warmup,
    }
    report["summary"] = (
        f"cold start {report['cold_start_ms']:.0f} ms, warm p50 {report['warm_start_p50_ms']:.0f} ms / "
        f"p95 {report['warm_start_p95_ms']:.0f} ms over {num_warmup} requests"
        + ("" if post_scaledown is None else f", after {scaledown_wait:.0f} s idle {post_scaledown:.0f} ms")
    )
    rows = [
        ("cold start", report["cold_start_ms"]),
        ("warm avg", report["warm_start_avg_ms"]),
        ("warm p50", report["warm_start_p50_ms"]),
        ("warm p95", report["warm_start_p95_ms"]),
        ("post-scaledown cold start", report["post_scaledown_cold_start_ms"]),
    ]
    print(f"{'measure':28} {'ms':>10}")
    for label, value in rows:
        print(f"{label:28} {'-' if value is None else f'{value:10.1f}'}")
    print(report["summary"])
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return report
