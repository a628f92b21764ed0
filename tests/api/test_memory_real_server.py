"""Issue #15's memory bounds through a real `pagelens serve` process (tiny ColQwen2.5, float32) on
loopback: adversarial bodies never take the server's RSS over 2 GB, never delay /health by more
than 1 s, and the memory comes back after the burst. Numbers for each case, and a rerunnable probe:
tests/api/memory_probe.py (idle RSS of this server: ~960 MB, half of it shared libraries)."""

from __future__ import annotations

import pytest

from tests.api.memory_probe import MB, Burst, bilevel_request, burst, concurrently, json_request, valid_images_request
from tests.api.server import start_server

KEY = "memory-bounds-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
RSS_BAR = 2048 * MB
HEALTH_BAR = 1.0  # seconds
GIVEN_BACK = 200 * MB  # RSS after a burst stays within this of where it started


@pytest.fixture(scope="module")
def live(tiny_model, tmp_path_factory):
    """`(pid, base_url)` of a server of its own, so its RSS is this module's to read."""
    log_path = tmp_path_factory.mktemp("memory-bounds") / "server.log"
    process, base_url = start_server(tiny_model, api_key=KEY, log_path=log_path, extra_args=("--log-level", "warning"))
    try:
        yield process.pid, base_url
    finally:
        process.terminate()
        process.wait(30)


def check(result: Burst, allowed: set[int]) -> None:
    assert set(result.statuses) <= allowed, result.line("statuses")
    assert result.peak < RSS_BAR, result.line("rss over 2 GB")
    assert result.slowest_health < HEALTH_BAR and not result.health_failures, result.line("/health delayed")
    assert result.after < result.before + GIVEN_BACK, result.line("memory not given back")


def test_bilevel_pages_within_the_limits_are_embedded_in_bounded_memory(live):
    """Two 8000x8000 bilevel PNGs (a few KB each, ~256 MB each as RGB; 128 Mpx, within every
    limit): decoded one at a time by the engine, reduced before the processor."""
    pid, url = live
    result = burst(pid, url, bilevel_request(HEADERS, count=2))
    check(result, {200})
    assert result.statuses == [200]


def test_too_many_decoded_pixels_are_refused_at_once_not_decoded(live):
    """Eight such PNGs in one body (512 Mpx: 2 GB of RGB) are a 413 from the headers alone; four
    clients each sending two at once get 429 for what does not fit beside the first."""
    pid, url = live
    too_large = burst(pid, url, bilevel_request(HEADERS, count=8))
    check(too_large, {413})
    assert too_large.peak < too_large.before + 100 * MB, too_large.line("a refused body was decoded")
    crowd = burst(pid, url, concurrently(bilevel_request(HEADERS, count=2), 4))
    check(crowd, {200, 429})
    assert 200 in crowd.statuses and 429 in crowd.statuses, crowd.line("admission")


def test_sixty_megabyte_json_bodies_cost_a_bounded_amount(live):
    """~60 MB of base64 that is no image (a 400 naming index 0), then ~60 MB of valid 600x800 PNGs."""
    pid, url = live
    junk = burst(pid, url, json_request(HEADERS))
    check(junk, {400})
    assert junk.peak < junk.before + 300 * MB, junk.line("60 MB body")
    pages = burst(pid, url, valid_images_request(HEADERS, total_bytes=30 * MB))
    check(pages, {200})
    assert pages.peak < pages.before + 300 * MB, pages.line("30 MB of pages")
