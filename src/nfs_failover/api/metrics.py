"""The API's ``/metrics``: a Prometheus collector over the handle's ``metrics_state()``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from nfs_failover.controller.decide import VolumeState
from nfs_failover.controller.handle import ControllerHandle
from nfs_failover.controller.snapshot import VolumeMetrics

# Probe latencies run from sub-millisecond (loopback) to the probe timeout (seconds).
PROBE_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def add_metrics_route(app: FastAPI, handle: ControllerHandle) -> None:
    # A registry of the app's own: two apps in one process (tests, a restart) never
    # collide, and nothing else registered globally leaks into this exposition.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HandleCollector(handle))

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


class HandleCollector:
    """Reads ``metrics_state()`` and ``alive()`` at each scrape; keeps no state of its own.

    ``nfs_failover_probe_latency_seconds`` is a histogram of the samples the handle
    reports now (its recent window), rebuilt at each scrape: the handle gives no sample
    ids, so samples cannot be counted once each into a cumulative histogram. Its buckets
    and count are therefore not monotonic: use ``histogram_quantile`` on the buckets as
    scraped, not on ``rate()`` of them. A volume whose lag is unknown has no
    ``nfs_failover_replication_lag_seconds`` sample (absent, not zero); while the store
    does not answer, ``nfs_failover_store_up`` is 0 and the journal's counters are absent,
    and everything the controller knows without the store is still there.
    """

    def __init__(self, handle: ControllerHandle) -> None:
        self._handle = handle

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing to check for duplicates at registration; no scrape at startup

    def collect(self) -> Iterator[Metric]:
        entries: Sequence[VolumeMetrics] = self._handle.metrics_state()
        yield _state_family(entries)
        yield _lag_family(entries)
        yield _failovers_family(entries)
        yield _latency_family(entries)
        alive = GaugeMetricFamily(
            "nfs_failover_controller_alive",
            "1 while the decision loop completes its cycles in time, 0 when it is stuck.",
            value=1.0 if self._handle.alive() else 0.0,
        )
        yield alive
        yield GaugeMetricFamily(
            "nfs_failover_store_up",
            "1 while the store answers the controller's reads, 0 while it does not.",
            value=0.0 if any(e.store_error is not None for e in entries) else 1.0,
        )


def _state_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = GaugeMetricFamily(
        "nfs_failover_volume_state",
        "1 for the state the volume is in, 0 for each other state it can be in.",
        labels=["volume", "state"],
    )
    for entry in entries:
        for state in VolumeState:
            family.add_metric([entry.volume, state.value], 1.0 if state is entry.state else 0.0)
    return family


def _lag_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = GaugeMetricFamily(
        "nfs_failover_replication_lag_seconds",
        "Age of the newest data the destination has; absent while unknown.",
        labels=["volume"],
    )
    for entry in entries:
        if entry.replication_lag_seconds is not None:
            family.add_metric([entry.volume], entry.replication_lag_seconds)
    return family


def _failovers_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = CounterMetricFamily(
        "nfs_failover_failovers",
        "Failovers of the volume, as the journal counts them; absent while the store does"
        " not answer.",
        labels=["volume"],
    )
    for entry in entries:
        if entry.failovers_total is not None:
            family.add_metric([entry.volume], float(entry.failovers_total))
    return family


def _latency_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = HistogramMetricFamily(
        "nfs_failover_probe_latency_seconds",
        "Latency of the recent probes of each replica, as the controller reports them now.",
        labels=["volume", "replica"],
    )
    for entry in entries:
        by_replica: dict[str, list[float]] = {}
        for sample in entry.probe_latency_seconds:
            by_replica.setdefault(sample.replica, []).append(sample.seconds)
        for replica, samples in by_replica.items():
            buckets = [
                (str(bound), float(sum(s <= bound for s in samples)))
                for bound in PROBE_LATENCY_BUCKETS
            ]
            buckets.append(("+Inf", float(len(samples))))
            family.add_metric([entry.volume, replica], buckets, sum_value=sum(samples))
    return family
