"""Telemetry throughput: K simulated agents publish metrics and log batches into one
nats-server while one subscriber decodes them; the baseline is the raw nats-py
publish/subscribe rate of the very same payloads in the same run.

Two passes over the same prebuilt payloads, each with K publisher processes:
  raw       the subscriber counts messages (nats-py's own ceiling on this machine)
  decoded   the subscriber decodes and validates every message (protocol.codec.decode)
Then FLEET_METRICS/FLEET_LOGS are replayed through FleetFeed (the JetStream consumer
that fleetctl uses), and the latency of one log line from publish to subscriber.
Figures, never assertions. Targets (issue 5): >= 50,000 decoded messages/s, ratio >= 0.5.

usage: python bench/telemetry.py [--publishers K] [--messages N] [--lines L]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.codec import metrics_sample
from controller.broker import NatsServer, find_nats_server_binary
from controller.state.store import ensure_streams
from controller.streams.feed import FleetFeed
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import LogBatch, LogEntry
from protocol.streams import StreamRetention

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def log_batch(host: str, lines: int) -> LogBatch:
    return LogBatch(
        sender=host,
        host=host,
        service="web",
        container_id="c" * 64,
        lines=tuple(
            LogEntry(
                stream="stdout",
                timestamp=NOW + timedelta(milliseconds=i),
                line=f'127.0.0.1 - - "GET /api/items/{i} HTTP/1.1" 200 512 0.{i:03d}s',
            )
            for i in range(lines)
        ),
    )


def payloads(host: str, lines: int) -> list[tuple[str, bytes]]:
    """One host's traffic mix: a metrics sample for every four log batches."""
    metrics = metrics_sample().model_copy(update={"host": host, "sender": host})
    mix = [(subjects.metrics_subject(host), encode(metrics))]
    mix += [(subjects.log_subject(host, "web"), encode(log_batch(host, lines)))] * 4
    return mix


def publisher(url: str, index: int, count: int, lines: int) -> None:
    async def run() -> None:
        nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
        mix = payloads(f"edge-{index:04d}", lines)
        for n in range(count):
            subject, data = mix[n % len(mix)]
            await nc.publish(subject, data)
            if n % 1000 == 999:
                await nc.flush(timeout=30)
        await nc.flush(timeout=30)
        await nc.close()

    asyncio.run(run())


async def one_pass(url: str, args: argparse.Namespace, decoding: bool) -> tuple[float, int, int]:
    """(messages/s at the subscriber, received, undecodable)."""
    nc = await nats.connect(url)
    expected = args.publishers * args.messages
    received = 0
    bad = 0
    first = last = 0.0
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        nonlocal received, bad, first, last
        if decoding:
            try:
                decode(msg.data)
            except ValueError:
                bad += 1
        received += 1
        last = time.perf_counter()
        if received == 1:
            first = last
        if received >= expected:
            done.set()

    await nc.subscribe(
        f"{subjects.PREFIX}.>", cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1
    )
    await nc.flush()
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=publisher, args=(url, i, args.messages, args.lines))
        for i in range(args.publishers)
    ]
    for proc in procs:
        proc.start()
    try:
        await asyncio.wait_for(done.wait(), 300)
    except TimeoutError:
        print(f"  (only {received} of {expected} arrived: the server dropped a slow consumer)")
    for proc in procs:
        await asyncio.to_thread(proc.join)
    await nc.close()
    span = max(last - first, 1e-9)
    return received / span, received, bad


async def replay(url: str) -> tuple[float, int]:
    nc = await nats.connect(url)
    feed = FleetFeed(nc)
    count = 0
    start = time.perf_counter()
    for read in (feed.metrics(batch=1000), feed.logs("web", batch=1000)):
        async with aclosing(read) as deliveries:
            async for _ in deliveries:
                count += 1
    elapsed = time.perf_counter() - start
    await nc.close()
    return count / elapsed, count


async def log_latency(url: str, rounds: int = 200) -> list[float]:
    """Publish a one-line batch to JetStream, time its arrival at a live subscriber."""
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=5)
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_message(_: Msg) -> None:
        arrived.put_nowait(time.perf_counter())

    await nc.subscribe(subjects.log_subject("edge-lat", "web"), cb=on_message)
    latencies = []
    for _ in range(rounds):
        batch = log_batch("edge-lat", 1)
        sent = time.perf_counter()
        await js.publish(
            subjects.log_subject("edge-lat", "web"),
            encode(batch),
            headers={"Nats-Msg-Id": batch.id},
        )
        latencies.append((await asyncio.wait_for(arrived.get(), 5) - sent) * 1000)
    await nc.close()
    return latencies


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work:
        server = NatsServer(binary=find_nats_server_binary(), work_dir=Path(work) / "nats")
        await server.start()
        try:
            nc = await nats.connect(server.url)
            await ensure_streams(nc.jetstream(timeout=10), StreamRetention())
            await nc.close()
            sizes = [len(data) for _, data in payloads("edge-0000", args.lines)]
            print(
                f"telemetry: {args.publishers} publishers x {args.messages} messages "
                f"(1 metrics sample of {sizes[0]} B per 4 log batches of {args.lines} lines, "
                f"{sizes[1]} B)"
            )
            raw, raw_n, _ = await one_pass(server.url, args, decoding=False)
            print(f"  raw nats-py pub/sub    {raw:10,.0f} msg/s ({raw_n} received)")
            decoded, dec_n, bad = await one_pass(server.url, args, decoding=True)
            print(f"  decoded and validated  {decoded:10,.0f} msg/s ({dec_n} received, {bad} bad)")
            print(f"  ratio decoded/raw      {decoded / raw:10.2f}  (target >= 0.5)")
            print(f"  log lines decoded/s    {decoded * 0.8 * args.lines:10,.0f}")
            rate, count = await replay(server.url)
            print(f"  JetStream replay via FleetFeed {rate:,.0f} msg/s ({count} messages)")
            latencies = sorted(await log_latency(server.url))
            p50 = statistics.median(latencies)
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            print(f"  log line publish -> subscriber: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        finally:
            await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=25_000)
    parser.add_argument("--lines", type=int, default=10, help="log lines per batch")
    asyncio.run(main(parser.parse_args()))
