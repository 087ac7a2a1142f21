"""How fast a `config set` reaches a fleet: real agents, real containers, real SIGHUP.

N `fleet-agent run` processes each run demo/web (host networking, each on its own port)
with a `[config]` section. Each round stores a new app.conf in KV fleet_config and times,
from the write:

- the baseline: N plain nats-py KV watchers in this process seeing the new revision
  (the bus's own fan-out, measured in the same run);
- reaction: the last agent's `config_reloading` event (it saw the change, resolved its
  content and is writing the file);
- applied: the last agent's `config_applied` event (file written, SIGHUP sent, the probe
  passed for min_healthy_time, here 0.5 s).

Figures, never assertions. usage: python bench/config_fanout.py [--hosts N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from controller.state.config_store import open_config_store
from fleet_lab.agent_client import AgentClient, apply_ok, connect, demo_spec, wait_until_serving
from fleet_lab.agent_process import AgentProcess, agent_args
from fleet_lab.stack import load_local_stack
from protocol import subjects
from protocol.codec import decode
from protocol.config_files import ConfigContent, service_config_keys
from protocol.models import ConfigPhase, ConfigProgress, utc_now
from protocol.spec import ConfigMount


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def main(hosts: int, rounds: int) -> None:
    stack = load_local_stack()
    baseline: list[float] = []
    reaction: list[float] = []
    applied: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-") as scratch:
        work = Path(scratch)
        server = NatsServer(binary=find_nats_server_binary(), work_dir=work / "nats")
        await server.start()
        client = await connect(server.url)
        store = await open_config_store(client.jetstream(timeout=5))
        await store.set("web", "app.conf", ConfigContent.of(b"message=round 0\n"), utc_now())
        tag = f"fanout{os.getpid()}"
        processes: list[AgentProcess] = []
        try:
            for index in range(hosts):
                host = f"{tag}-{index}"
                process = AgentProcess(
                    args=agent_args(server.url, host, stack.docker_host, work / host, f"{host}-"),
                    log_path=work / f"{host}.log",
                )
                processes.append(process)
                await process.start()
                agent = AgentClient(client=client, host=host)
                await wait_until_serving(agent, deadline_s=30)
                spec = demo_spec(
                    stack.demo_image("1.0.0"), reserve_loopback_port(), min_healthy=0.5
                )
                await apply_ok(agent, spec.model_copy(update={"config": ConfigMount()}))

            events: dict[tuple[int, ConfigPhase], list[float]] = {}

            async def on_event(msg: Msg) -> None:
                message = decode(msg.data)
                if isinstance(message, ConfigProgress):
                    key = (message.version, message.phase)
                    events.setdefault(key, []).append(time.perf_counter())

            kv = await client.jetstream(timeout=5).key_value(subjects.CONFIG_BUCKET)
            watchers = [await kv.watch(service_config_keys("web")) for _ in range(hosts)]
            for watcher in watchers:  # drain the initial value and the end-of-history marker
                while await watcher.updates(timeout=5) is not None:  # type: ignore[no-untyped-call]  # nats-py: KeyWatcher is unannotated
                    pass
            await client.subscribe(subjects.EVENTS_WILDCARD, cb=on_event)
            await asyncio.sleep(3)  # every agent's watcher is open (rescan every second)

            for round_number in range(1, rounds + 1):
                content = ConfigContent.of(f"message=round {round_number}\n".encode())
                started = time.perf_counter()
                stored = await store.set("web", "app.conf", content, utc_now())
                version = stored.document.version
                seen = [await watcher.updates(timeout=10) for watcher in watchers]  # type: ignore[no-untyped-call]  # nats-py: KeyWatcher is unannotated
                baseline.append(time.perf_counter() - started)
                assert all(entry is not None for entry in seen)
                deadline = time.perf_counter() + 30
                while len(events.get((version, ConfigPhase.APPLIED), [])) < hosts:
                    if time.perf_counter() > deadline:
                        raise SystemExit(f"round {round_number}: not every host applied it")
                    await asyncio.sleep(0.01)
                reaction.append(max(events[(version, ConfigPhase.RELOADING)]) - started)
                applied.append(max(events[(version, ConfigPhase.APPLIED)]) - started)
            for watcher in watchers:
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py: KeyWatcher is unannotated
        finally:
            for process in processes:
                await process.stop()
            await client.close()
            await server.stop()
            names = [f"{tag}-{i}-web" for i in range(hosts)]
            remove = await asyncio.create_subprocess_exec(
                "/usr/bin/docker",
                "rm",
                "-f",
                *names,
                env={**os.environ, "DOCKER_HOST": stack.docker_host},
                stdout=asyncio.subprocess.DEVNULL,
            )
            await remove.wait()

    base = statistics.median(baseline)
    react = statistics.median(reaction)
    print(f"config_fanout: {hosts} agents, {rounds} changes of app.conf, SIGHUP policy")
    print(
        f"  KV watchers see the write (baseline): p50 {base * 1000:.1f} ms, "
        f"p90 {percentile(baseline, 0.9) * 1000:.1f} ms"
    )
    print(
        f"  last agent starts the reload:         p50 {react * 1000:.1f} ms, "
        f"p90 {percentile(reaction, 0.9) * 1000:.1f} ms  ({react / base:.1f}x the baseline)"
    )
    print(
        f"  last agent verified it (0.5 s soak):  p50 {statistics.median(applied):.2f} s, "
        f"p90 {percentile(applied, 0.9):.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.hosts, arguments.rounds))
