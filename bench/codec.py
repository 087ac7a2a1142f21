"""Codec throughput: protocol encode+decode against raw msgpack of the same dicts.

The raw baseline packs and unpacks the very dict our encoder produces, so the ratio is
the price of validation (pydantic) on top of serialisation. Figures, never assertions.

usage: python bench/codec.py [--seconds S]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgpack
from pydantic import BaseModel

from protocol.codec import decode, encode
from protocol.models import ApplyCommand, ContainerMetrics, MetricsSample
from protocol.spec import (
    ContainerSettings,
    HealthCheck,
    HttpProbe,
    PortMapping,
    Resources,
    RestartPolicy,
    ServiceSpec,
    VolumeMount,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def metrics_sample() -> MetricsSample:
    return MetricsSample(
        sender="edge-0042",
        host="edge-0042",
        cpu_percent=12.5,
        memory_used=3_200_000_000,
        memory_total=8_000_000_000,
        disk_used=40_000_000_000,
        disk_total=120_000_000_000,
        load_1m=0.42,
        net_bytes_sent=123_456_789,
        net_bytes_recv=987_654_321,
        open_files=311,
        containers=tuple(
            ContainerMetrics(
                service=f"svc-{i}",
                container_id=f"{i:064x}",
                cpu_percent=1.5 * i,
                memory_bytes=50_000_000 * (i + 1),
                memory_limit_bytes=512 * 1024 * 1024,
            )
            for i in range(3)
        ),
    )


def apply_command() -> ApplyCommand:
    spec = ServiceSpec(
        name="web",
        image="127.0.0.1:5000/demo/web:1.1.0@sha256:" + "ab" * 32,
        container=ContainerSettings(
            env={"PORT": "8080", "LOG_LEVEL": "info", "REGION": "eu-west"},
            volumes=(VolumeMount(source="web-data", target="/data"),),
            ports=(PortMapping(container_port=8080),),
            restart_policy=RestartPolicy(name="unless-stopped"),
            resources=Resources(memory_bytes=256 * 1024 * 1024, cpus=0.5),
            labels={"team": "platform"},
        ),
        health=HealthCheck(probe=HttpProbe(port=8080), min_healthy_time=5, healthy_deadline=60),
    )
    return ApplyCommand(
        sender="controller", host="edge-0042", expires_at=NOW + timedelta(seconds=60), service=spec
    )


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second, measured over at least ``seconds``."""
    count, batch = 0, 200
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            operation()
        count += batch
    return count / elapsed


def measure(name: str, message: BaseModel, seconds: float) -> None:
    payload = encode(message)
    as_dict = message.model_dump(mode="python")

    def ours() -> None:
        decode(encode(message))

    def raw() -> None:
        msgpack.unpackb(msgpack.packb(as_dict, datetime=True), timestamp=3)

    raw_rate = rate(raw, seconds)
    our_rate = rate(ours, seconds)
    print(
        f"{name:<14} {len(payload):>6} B   fleetwave {our_rate:>10,.0f} msg/s   "
        f"raw msgpack {raw_rate:>10,.0f} msg/s   ratio {our_rate / raw_rate:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    print("encode+decode round trips per second (one core), same payloads in the same run")
    measure("MetricsSample", metrics_sample(), args.seconds)
    measure("ApplyCommand", apply_command(), args.seconds)


if __name__ == "__main__":
    main()
