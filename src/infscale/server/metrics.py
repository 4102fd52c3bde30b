"""Server metrics, rendered by ``prometheus_client`` in the Prometheus text format (0.0.4).

Each app gets its own :class:`Metrics` with its own ``CollectorRegistry`` (no process-global
registry: tests and embedders build many apps in one process). Call sites name labels as
keywords (``metrics.tokens.inc(12, strategy="majority", kind="generated")``); :class:`_Family`
turns that into ``prometheus_client``'s ``labels(...).inc(...)``.

The ``*_created`` timestamp series that ``prometheus_client`` adds to counters and histograms by
default are switched off (``disable_created_metrics``, a process-wide setting of the library), so
``/metrics`` carries exactly the series documented in docs/server.md.
"""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE", "LATENCY_BUCKETS"]

#: What ``generate_latest`` writes: the text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _Family:
    """A ``prometheus_client`` metric whose labels are given as keywords at each update."""

    def __init__(self, metric: Any):
        self._metric = metric

    def _child(self, labels: dict[str, str]) -> Any:
        return self._metric.labels(**labels) if labels else self._metric

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).dec(amount)

    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(value)

    def observe(self, value: float, **labels: str) -> None:
        self._child(labels).observe(value)


class Metrics:
    """What the server measures; rendered at ``GET /metrics``."""

    def __init__(self) -> None:
        prometheus_client.disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = _Family(Counter("infscale_requests_total", "HTTP requests answered, by endpoint and status code.",
                                        ("endpoint", "status"), registry=r))
        self.latency = _Family(Histogram("infscale_request_duration_seconds",
                                         "Wall time from admission to the last byte, by endpoint and strategy.",
                                         ("endpoint", "strategy"), buckets=LATENCY_BUCKETS, registry=r))
        self.queue_wait = _Family(Histogram("infscale_queue_wait_seconds", "Time requests waited for a free slot.",
                                            buckets=LATENCY_BUCKETS, registry=r))
        self.tokens = _Family(Counter("infscale_tokens_total",
                                      "Tokens spent by strategies (every internal call, scorers included), by kind.",
                                      ("strategy", "kind"), registry=r))
        self.calls = _Family(Counter("infscale_model_calls_total", "Model calls made by strategies (scorers included).",
                                     ("strategy",), registry=r))
        self.cancelled = _Family(Counter("infscale_cancelled_requests_total",
                                         "Requests whose generation was cancelled, by reason.", ("reason",), registry=r))
        self.in_flight = _Family(Gauge("infscale_requests_in_flight", "Requests holding a concurrency slot.", registry=r))
        self.queue_depth = _Family(Gauge("infscale_queue_depth", "Requests waiting for a concurrency slot.", registry=r))

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")
