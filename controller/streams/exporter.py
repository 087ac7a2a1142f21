"""``fleetctl exporter``: the fleet's streams as a Prometheus endpoint.

It reads FLEET_METRICS (each host's newest sample, then every new one) and FLEET_EVENTS
(from now on) into ``ExportedState``, and a prometheus-client collector turns that
state into series at each scrape. The active rollouts are read from KV once at start,
so their progress is exported before their next event. Counters count from the
exporter's start, as Prometheus counters do.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import nats.errors
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.rollouts.fleet_metrics import FleetMetrics
from controller.rollouts.model import TERMINAL, UPDATED
from controller.rollouts.service_summary import ServiceSummary
from controller.state.intents import Fleet
from controller.state.service_view import service_summaries
from controller.streams.feed import Delivered, FleetFeed
from protocol.errors import BrokerError
from protocol.models import (
    AnyMessage,
    ConvergenceEvent,
    Health,
    MetricsSample,
    OperationReply,
    RolloutEvent,
    TelemetryDropped,
    utc_now,
)

log = logging.getLogger("fleetctl.exporter")
DECLARED_REFRESH = 5.0
"""Seconds between two readings of the declared services and apps from KV."""
DECLARED_STATES = (
    *("matching", "converged", "missing", "outdated", "ahead", "drifted", "removing"),
    "engine_down",
)
"""The host counts of `fleetctl services`, one series each."""


@dataclass(frozen=True)
class RolloutProgress:
    service: str
    status: str
    hosts_done: int
    hosts_total: int


@dataclass
class ExportedState:
    """What the streams said so far; written by the event loop, read by scrapes."""

    metrics: FleetMetrics = field(default_factory=FleetMetrics)
    rollouts: dict[str, RolloutProgress] = field(default_factory=dict)
    updates: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(service, outcome) -> Apply/Rollback outcomes reported by agents."""
    dropped: Counter[str] = field(default_factory=Counter)
    """host -> telemetry messages it had to drop."""
    convergence: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(service, action) -> what the controller's convergence did or found."""
    declared: list[ServiceSummary] = field(default_factory=list)
    """Each declared service and app, as `fleetctl services` judges it, read from KV."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, message: AnyMessage) -> None:
        with self.lock:
            if isinstance(message, MetricsSample):
                self.metrics.add(message)
            elif isinstance(message, RolloutEvent):
                self.rollouts[message.rollout_id] = RolloutProgress(
                    message.service, message.status, message.hosts_done, message.hosts_total
                )
            elif isinstance(message, OperationReply):
                self.updates[(message.service, message.outcome.value)] += 1
            elif isinstance(message, TelemetryDropped):
                self.dropped[message.host] += message.messages
            elif isinstance(message, ConvergenceEvent):
                self.convergence[(message.service, message.action.value)] += 1


class FleetCollector(Collector):
    def __init__(self, state: ExportedState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        with state.lock:
            samples = dict(state.metrics.latest)
            now = utc_now()
            fresh = {host: state.metrics.fresh(host, now) for host in samples}
            rollouts = dict(state.rollouts)
            updates = Counter(state.updates)
            dropped = Counter(state.dropped)
            convergence = Counter(state.convergence)
            declared = list(state.declared)
        yield from _host_series(samples, fresh)
        yield from _service_series(samples, fresh)
        yield from _rollout_series(rollouts)
        yield _declared_series(declared)
        outcomes = CounterMetricFamily(
            "fleet_updates",
            "Apply and rollback outcomes reported by agents",
            labels=["service", "outcome"],
        )
        for (service, outcome), count in sorted(updates.items()):
            outcomes.add_metric([service, outcome], count)
        yield outcomes
        drops = CounterMetricFamily(
            "fleet_telemetry_dropped_messages",
            "Telemetry messages hosts dropped while NATS was away",
            labels=["host"],
        )
        for host, count in sorted(dropped.items()):
            drops.add_metric([host], count)
        yield drops
        actions = CounterMetricFamily(
            "fleet_convergence_actions",
            "Convergence actions and drift findings of the controller, by action",
            labels=["service", "action"],
        )
        for (service, action), count in sorted(convergence.items()):
            actions.add_metric([service, action], count)
        yield actions


def _host_series(samples: dict[str, MetricsSample], fresh: dict[str, bool]) -> Iterator[Metric]:
    families = {
        "up": GaugeMetricFamily(
            "fleet_host_up", "1 while the host's metrics are fresh", labels=["host"]
        ),
        "cpu": GaugeMetricFamily(
            "fleet_host_cpu_percent", "Host CPU use, percent", labels=["host"]
        ),
        "mem": GaugeMetricFamily(
            "fleet_host_memory_used_bytes", "Host memory in use", labels=["host"]
        ),
        "memt": GaugeMetricFamily("fleet_host_memory_total_bytes", "Host memory", labels=["host"]),
        "disk": GaugeMetricFamily(
            "fleet_host_disk_used_bytes", "Docker disk in use", labels=["host"]
        ),
        "diskt": GaugeMetricFamily(
            "fleet_host_disk_total_bytes", "Docker disk size", labels=["host"]
        ),
        "load": GaugeMetricFamily("fleet_host_load1", "1-minute load average", labels=["host"]),
    }
    for host, sample in sorted(samples.items()):
        families["up"].add_metric([host], 1.0 if fresh[host] else 0.0)
        families["cpu"].add_metric([host], sample.cpu_percent)
        families["mem"].add_metric([host], sample.memory_used)
        families["memt"].add_metric([host], sample.memory_total)
        families["disk"].add_metric([host], sample.disk_used)
        families["diskt"].add_metric([host], sample.disk_total)
        families["load"].add_metric([host], sample.load_1m)
    yield from families.values()


def _service_series(samples: dict[str, MetricsSample], fresh: dict[str, bool]) -> Iterator[Metric]:
    labels = ["host", "service"]
    cpu = GaugeMetricFamily(
        "fleet_container_cpu_percent", "Container CPU, percent of a core", labels=labels
    )
    memory = GaugeMetricFamily("fleet_container_memory_bytes", "Container memory", labels=labels)
    restarts = GaugeMetricFamily(
        "fleet_container_restarts", "Restarts by the engine's policy", labels=labels
    )
    up = GaugeMetricFamily(
        "fleet_service_hosts_up", "Hosts running the service", labels=["service"]
    )
    healthy = GaugeMetricFamily(
        "fleet_service_hosts_healthy", "Hosts where the service is healthy", labels=["service"]
    )
    running: Counter[str] = Counter()
    well: Counter[str] = Counter()
    for host, sample in sorted(samples.items()):
        for container in sample.containers:
            cpu.add_metric([host, container.service], container.cpu_percent)
            memory.add_metric([host, container.service], container.memory_bytes)
            restarts.add_metric([host, container.service], container.restart_count)
        if not fresh[host]:
            continue
        for service in {c.service for c in sample.containers}:
            running[service] += 1
            if any(c.service == service and c.health is Health.HEALTHY for c in sample.containers):
                well[service] += 1
    for service in sorted(running):
        up.add_metric([service], running[service])
        healthy.add_metric([service], well[service])
    yield from (cpu, memory, restarts, up, healthy)


def _declared_series(declared: list[ServiceSummary]) -> Metric:
    """Hosts by declared service or app and by what `fleetctl services` counts them as:
    an app is one series of its own (kind="app"), beside its members' containers."""
    hosts = GaugeMetricFamily(
        "fleet_declared_hosts",
        "Live hosts of a declared service or app, by state (as fleetctl services)",
        labels=["service", "kind", "state"],
    )
    for summary in declared:
        for state in DECLARED_STATES:
            hosts.add_metric([summary.service, summary.kind, state], getattr(summary, state))
    return hosts


def _rollout_series(rollouts: dict[str, RolloutProgress]) -> Iterator[Metric]:
    labels = ["rollout", "service", "status"]
    done = GaugeMetricFamily(
        "fleet_rollout_hosts_done", "Hosts the rollout has updated", labels=labels
    )
    total = GaugeMetricFamily(
        "fleet_rollout_hosts_total", "Hosts the rollout targets", labels=labels
    )
    for rollout_id, progress in sorted(rollouts.items()):
        key = [rollout_id, progress.service, progress.status]
        done.add_metric(key, progress.hosts_done)
        total.add_metric(key, progress.hosts_total)
    yield done
    yield total


class FleetExporter:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self.state = ExportedState()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(self.state))

    async def seed_rollouts(self) -> None:
        """The progress of every unfinished rollout, before any event about it arrives."""
        for record in await self._fleet.rollouts.all():
            if record.status in TERMINAL:
                continue
            done = sum(1 for host in record.hosts.values() if host.phase in UPDATED)
            with self.state.lock:
                self.state.rollouts[record.id] = RolloutProgress(
                    record.service, record.status.value, done, len(record.hosts)
                )

    async def serve(self, address: str, port: int, stop: asyncio.Event) -> None:
        await self.seed_rollouts()
        try:
            server, thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise BrokerError(f"cannot listen on {address}:{port}: {exc}") from exc
        log.info("serving /metrics on %s:%d", address, port)
        feed = FleetFeed(self._fleet.client)
        started = utc_now()

        def metrics(after: int | None) -> AsyncIterator[Delivered]:
            if after is None:
                return feed.metrics(latest=True, follow=True)
            return feed.metrics(start_sequence=after + 1, follow=True)

        def events(after: int | None) -> AsyncIterator[Delivered]:
            if after is None:
                return feed.events(since=started, follow=True)
            return feed.events(start_sequence=after + 1, follow=True)

        readers = [
            asyncio.create_task(self._follow("metrics", metrics), name="metrics"),
            asyncio.create_task(self._follow("events", events), name="events"),
            asyncio.create_task(self._read_declared(), name="declared"),
        ]
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([*readers, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*readers, stopping):
                task.cancel()
            results = await asyncio.gather(*readers, stopping, return_exceptions=True)
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        for result in results:
            if isinstance(result, BrokerError):
                raise result

    async def _read_declared(self) -> None:
        """The declared services and apps, judged again every DECLARED_REFRESH seconds;
        a reading the bus breaks keeps the last one and is tried again."""
        while True:
            try:
                declared = await service_summaries(self._fleet, utc_now())
            except (BrokerError, nats.errors.Error, TimeoutError) as exc:
                log.warning("declared services could not be read: %r", exc)
            else:
                with self.state.lock:
                    self.state.declared = declared
            await asyncio.sleep(DECLARED_REFRESH)

    async def _follow(
        self, name: str, open_feed: Callable[[int | None], AsyncIterator[Delivered]]
    ) -> None:
        """Read a stream for as long as the exporter runs: a read the bus breaks (a
        JetStream request that fails under load) is opened again after the last message
        it gave, so nothing is counted twice or lost."""
        after: int | None = None
        while True:
            try:
                async for delivered in open_feed(after):
                    after = delivered.sequence
                    self.state.add(delivered.message)
            except (BrokerError, nats.errors.Error, TimeoutError) as exc:
                log.warning("%s feed broke, reading it again: %r", name, exc)
            await asyncio.sleep(1.0)
