"""Prometheus metrics: counted in plain Python where requests are answered, exposed
through ``prometheus_client`` when scraped.

The step path pays a dictionary lookup, three additions and a bisect per request
(well under a microsecond); everything else (label sets, cumulative buckets, the
live instances by env id) is computed at scrape time by a custom collector, the
way ``prometheus_client`` documents for data kept outside its own metric objects.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from envs_api import protocol

# Request durations, in seconds (the last bucket, +Inf, is implied)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# What counting requests with a given route and status adds up to
_EVENTS = {
    ("step", 200): "steps",
    ("reset", 200): "resets",
    ("create", 200): "creates",
    ("close", 200): "closes",
}


class Requests:
    """Answered requests by route and status: their count and durations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (route, status) -> [sum of seconds, count in each bucket..., in +Inf]
        self.series: dict[tuple[str, int], list[float]] = {}
        self.database_errors = 0

    def observe_on_loop(self, route: str, status: int, seconds: float) -> None:
        """Count an answer: for the event loop's thread, where answers are written
        one at a time (no lock: this is the step path)."""
        series = self.series.get((route, status))
        if series is None:
            series = self.series[(route, status)] = [0.0] * (len(BUCKETS) + 2)
        series[0] += seconds
        series[1 + bisect_left(BUCKETS, seconds)] += 1

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count an answer, from any thread (WSGI servers answer from several)."""
        with self._lock:
            self.observe_on_loop(route, status, seconds)

    def database_error(self) -> None:
        with self._lock:
            self.database_errors += 1

    def snapshot(self) -> tuple[dict[tuple[str, int], list[float]], int]:
        with self._lock:  # a copy of each list: the loop may add to them meanwhile
            series = {key: list(s) for key, s in list(self.series.items())}
            return series, self.database_errors


requests = Requests()
observe = requests.observe
observe_on_loop = requests.observe_on_loop


def route_of(method: str, path: str) -> str:
    """The route label of a request: a v1 route's name, else a coarse area."""
    if path.startswith("/v1/envs"):
        target = protocol.target(path)
        if target is None:
            return "other"
        if target.route.name == "list":
            return "create" if method == "POST" else "list"
        return target.route.name
    if path.startswith("/v2/"):
        v2 = protocol.v2_target(path)
        if v2 is not None:
            return f"v2_{'batch_step' if v2[0] == 'batch' else v2[0]}"
    for prefix, name in _AREAS:
        if path.startswith(prefix):
            return name
    return "other"


_AREAS = (
    ("/v1/", "v1_other"),
    ("/v2/", "v2_other"),
    ("/admin/", "admin"),
    ("/api/", "schema"),
    ("/healthz", "healthz"),
    ("/readyz", "readyz"),
    ("/metrics", "metrics"),
)


class _Collector(Collector):
    """Builds the metric families from the plain counters, at scrape time."""

    def collect(self) -> Iterator[Any]:
        from envs_api import services  # the backend, set up with Django

        series, database_errors = requests.snapshot()
        counts = {key: int(sum(s[1:])) for key, s in series.items()}
        answered = CounterMetricFamily(
            "gymsite_requests",
            "Answered HTTP requests, by route and status",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(counts.items()):
            answered.add_metric([route, str(status)], count)
        yield answered
        durations: dict[str, list[float]] = {}  # by route, statuses added up
        for (route, _), s in series.items():
            into = durations.setdefault(route, [0.0] * len(s))
            for i, value in enumerate(s):
                into[i] += value
        latency = HistogramMetricFamily(
            "gymsite_request_duration_seconds",
            "Time from a request's first byte (shortcut) or its body (other ways) "
            "to its answer, by route",
            labels=["route"],
        )
        bounds = [*map(str, BUCKETS), "+Inf"]
        for route, (total, *in_bucket) in sorted(durations.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(bounds, in_bucket, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([route], buckets, total)
        yield latency
        for (route, status), name in _EVENTS.items():
            yield CounterMetricFamily(
                f"gymsite_{name}",
                f"Successful {name} (answered 200)",
                value=counts.get((route, status), 0),
            )
        yield CounterMetricFamily(
            "gymsite_database_errors",
            "Requests answered 503 because the registry database did not answer",
            value=database_errors,
        )
        live = GaugeMetricFamily(
            "gymsite_live_instances",
            "Environments live in this process's memory, by env id",
            labels=["env_id"],
        )
        for env_id, count in sorted(services.backend().census().items()):
            live.add_metric([env_id], count)
        yield live
        journals = services.backend().journals
        if journals is not None:
            stats = journals.stats
            for name, value, text in (
                ("journal_bytes", stats.bytes, "Bytes written to episode journals"),
                (
                    "journal_replays",
                    stats.replays,
                    "Episodes replayed from a journal after a restart",
                ),
                (
                    "journal_divergences",
                    stats.divergences,
                    "Replays that did not reproduce their journal (the env is not "
                    "deterministic): the episode was not continued",
                ),
                (
                    "journal_snapshots",
                    stats.snapshots,
                    "Snapshots of envs written to shorten replays",
                ),
                (
                    "journal_errors",
                    stats.errors,
                    "Journal writes the disk refused (the instance went on unjournalled)",
                ),
            ):
                yield CounterMetricFamily(f"gymsite_{name}", text, value=value)


registry = CollectorRegistry()
registry.register(_Collector())


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
