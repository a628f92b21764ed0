"""Prometheus metrics of one app: requests and latency by route and status, errors by type, the
engine's queue depth, batch sizes and item counts (read from the engine at scrape time), the
seconds per stage of each ask, the answer and query-embedding caches' hits and misses (read at
scrape time), and each open collection's measured fast-mode recall and default prefetch (read from
the collection service)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

EngineGetter = Callable[[], Any]  # the running runtime's Engine (its `stats`, `queue_depth`), or None
CacheGetter = Callable[[], Any]  # a cache of the runtime (its `hits`, `misses`, `len`), or None
RecallGetter = Callable[[], dict[str, Any]]  # CollectionService.recall_report

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class EngineCollector:
    """Exposes `Engine.stats` without the engine knowing about Prometheus."""

    def __init__(self, engine_getter: EngineGetter) -> None:
        self.engine_getter = engine_getter

    def collect(self):
        engine = self.engine_getter()
        if engine is None:
            return
        stats = engine.stats
        yield GaugeMetricFamily("pagelens_queue_depth", "Items submitted and not finished", value=engine.queue_depth)
        yield CounterMetricFamily("pagelens_items_embedded", "Items embedded", value=stats.items_embedded)
        yield CounterMetricFamily("pagelens_items_failed", "Items that ended in an error", value=stats.items_failed)
        yield CounterMetricFamily("pagelens_batches", "Forward passes run", value=stats.batches)
        yield CounterMetricFamily("pagelens_batch_splits", "Failed batches retried in halves", value=stats.batch_splits)
        counts = stats.batch_size_counts
        buckets, running = [], 0
        for bound in BATCH_SIZE_BUCKETS:
            running = sum(n for size, n in counts.items() if size <= bound)
            buckets.append((str(bound), running))
        total = sum(counts.values())
        buckets.append(("+Inf", total))
        yield HistogramMetricFamily(
            "pagelens_batch_size", "Items per forward pass", buckets=buckets,
            sum_value=sum(size * n for size, n in counts.items()),
        )  # fmt: skip


class CacheCollector:
    """Exposes a cache's counts (`pagelens_<name>_cache_hits`, `_misses`, `_entries`) without the cache
    knowing about Prometheus."""

    def __init__(self, name: str, what: str, cache_getter: CacheGetter) -> None:
        self.name, self.what, self.cache_getter = name, what, cache_getter

    def collect(self):
        cache = self.cache_getter()
        if cache is None:
            return
        prefix = f"pagelens_{self.name}_cache"
        yield CounterMetricFamily(f"{prefix}_hits", f"{self.what} found in the cache", value=cache.hits)
        yield CounterMetricFamily(f"{prefix}_misses", f"{self.what} not in the cache", value=cache.misses)
        yield GaugeMetricFamily(f"{prefix}_entries", f"{self.what} held in the cache", value=len(cache))


class RecallCollector:
    """Per collection (open ones): the mean recall@k of sampled fast searches against exact ones,
    how many samples it is over, and the fast mode's default prefetch; the sampler's counts."""

    def __init__(self, recall_getter: RecallGetter) -> None:
        self.recall_getter = recall_getter

    def collect(self):
        report = self.recall_getter()
        recall = GaugeMetricFamily(
            "pagelens_search_recall", "Measured recall@k of sampled fast searches vs exact (last samples)",
            labels=["collection"],
        )  # fmt: skip
        samples = GaugeMetricFamily(
            "pagelens_search_recall_samples", "Sampled fast searches the recall is measured over", labels=["collection"]
        )
        prefetch = GaugeMetricFamily(
            "pagelens_search_prefetch", "The fast mode's default prefetch (adapted to the target recall)",
            labels=["collection"],
        )  # fmt: skip
        for name, stats in sorted(report["collections"].items()):
            if stats["recall"] is not None:
                recall.add_metric([name], stats["recall"])
            samples.add_metric([name], stats["samples"])
            prefetch.add_metric([name], stats["prefetch"])
        yield from (recall, samples, prefetch)
        sampler = report["sampler"]
        yield CounterMetricFamily("pagelens_recall_checks", "Recall checks run (exact re-runs of fast searches)",
                                  value=sampler["checked"])  # fmt: skip
        yield CounterMetricFamily("pagelens_recall_checks_dropped", "Recall checks dropped: the queue was full",
                                  value=sampler["dropped"])  # fmt: skip


class Metrics:
    def __init__(
        self,
        engine_getter: EngineGetter,
        caches: dict[str, tuple[str, CacheGetter]] | None = None,
        recall_getter: RecallGetter | None = None,
    ) -> None:
        """`caches`: name -> (what it holds, its getter), each exposed by a CacheCollector;
        `recall_getter`: the collections' measured recall (a RecallCollector)."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pagelens_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "pagelens_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.errors = Counter("pagelens_errors", "Error responses by type", ["type"], registry=self.registry)
        self.ask_stages = Histogram(
            "pagelens_ask_stage_seconds", "Seconds per stage of an ask (a cached one: total only)", ["stage"],
            registry=self.registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.registry.register(EngineCollector(engine_getter))
        for name, (what, getter) in (caches or {}).items():
            self.registry.register(CacheCollector(name, what, getter))
        if recall_getter is not None:
            self.registry.register(RecallCollector(recall_getter))

    def on_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def on_ask(self, stages: dict[str, float], *, cached: bool) -> None:
        """Observe an answered ask's seconds per stage (`AskTimings.as_dict()`)."""
        for stage, seconds in stages.items():
            if not cached or stage == "total":
                self.ask_stages.labels(stage).observe(seconds)

    def on_error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
