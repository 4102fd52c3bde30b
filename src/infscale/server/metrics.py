"""Server metrics in the Prometheus text exposition format (version 0.0.4), no dependencies.

Counters, gauges and histograms with labels, kept per app (no process-global registry).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable

__all__ = ["Metrics", "Counter", "Gauge", "Histogram", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, doc: str, labels: Iterable[str] = ()):
        self.name = name
        self.doc = doc
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        return tuple(str(labels.get(k, "")) for k in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, doc: str, labels: Iterable[str] = ()):
        super().__init__(name, doc, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        k = self._key(labels)
        with self._lock:
            self._values[k] = self._values.get(k, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, doc: str, labels: Iterable[str] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS):
        super().__init__(name, doc, labels)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}

    def observe(self, value: float, **labels: str) -> None:
        k = self._key(labels)
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts = self._counts.setdefault(k, [0] * (len(self.buckets) + 1))
            counts[i] += 1
            self._sums[k] = self._sums.get(k, 0.0) + value

    def count(self, **labels: str) -> int:
        return sum(self._counts.get(self._key(labels), ()))

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, list(c), self._sums[k]) for k, c in self._counts.items())
        for k, counts, total in items:
            acc = 0
            for le, c in zip(self.buckets + (math.inf,), counts):
                acc += c
                le_label = 'le="' + _num(le) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, k, le_label)} {acc}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, k)} {_num(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, k)} {acc}")
        return lines


class Metrics:
    """What the server measures; rendered at ``GET /metrics``."""

    def __init__(self) -> None:
        self.requests = Counter("infscale_requests_total", "HTTP requests answered, by endpoint and status code.",
                                ("endpoint", "status"))
        self.latency = Histogram("infscale_request_duration_seconds",
                                 "Wall time from admission to the last byte, by endpoint and strategy.",
                                 ("endpoint", "strategy"))
        self.queue_wait = Histogram("infscale_queue_wait_seconds", "Time requests waited for a free slot.")
        self.tokens = Counter("infscale_tokens_total",
                              "Tokens spent by strategies (every internal call, scorers included), by kind.",
                              ("strategy", "kind"))
        self.calls = Counter("infscale_model_calls_total", "Model calls made by strategies (scorers included).",
                             ("strategy",))
        self.cancelled = Counter("infscale_cancelled_requests_total",
                                 "Requests whose generation was cancelled, by reason.", ("reason",))
        self.in_flight = Gauge("infscale_requests_in_flight", "Requests holding a concurrency slot.")
        self.queue_depth = Gauge("infscale_queue_depth", "Requests waiting for a concurrency slot.")
        self.in_flight.set(0)
        self.queue_depth.set(0)

    def all(self) -> list[_Metric]:
        return [self.requests, self.latency, self.queue_wait, self.tokens, self.calls, self.cancelled,
                self.in_flight, self.queue_depth]

    def render(self) -> str:
        lines: list[str] = []
        for m in self.all():
            lines += m.render()
        return "\n".join(lines) + "\n"
