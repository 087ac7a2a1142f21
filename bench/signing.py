"""What signed commands cost: signatures per second, and the round trip they add.

1. In-process: Ed25519 sign and verify of a real ApplyCommand (canonical msgpack bytes),
   per second.
2. Two real `fleet-agent run` processes on one nats-server, one trusting the controller
   key and one not, answer Inspect commands; the same number of round trips to each,
   interleaved: the signed one's median minus the unsigned one's is the added latency
   (it includes signing here, verifying and recording the signature there).
   Target (issue 7): under 1 ms added per command.

Figures, never assertions. usage: python bench/signing.py [--round-trips N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from fleet_lab.agent_client import AgentClient, connect, demo_spec, wait_until_serving
from fleet_lab.agent_process import AgentProcess, agent_args
from fleet_lab.stack import load_local_stack
from protocol.models import ApplyCommand, utc_now
from protocol.signing import CommandSigner, CommandVerifier, generate_key


def signatures_per_second(signer: CommandSigner, verifier: CommandVerifier) -> tuple[float, float]:
    stack = load_local_stack()
    command = ApplyCommand(
        sender="controller",
        host="h1",
        expires_at=utc_now() + timedelta(minutes=15),
        service=demo_spec(stack.demo_image("1.0.0"), reserve_loopback_port()),
    )
    count = 2000
    started = time.perf_counter()
    signed = [signer.sign(command) for _ in range(count)]
    signing = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for item in signed:
        verifier.verify(item)
    return signing, count / (time.perf_counter() - started)


async def round_trips(count: int) -> tuple[list[float], list[float]]:
    stack = load_local_stack()
    private, public = generate_key()
    signer = CommandSigner(private)
    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-") as scratch:
        work = Path(scratch)
        server = NatsServer(binary=find_nats_server_binary(), work_dir=work / "nats")
        await server.start()
        agents = {
            "plain": AgentProcess(
                args=agent_args(server.url, "plain", stack.docker_host, work / "plain", "sb-p-"),
                log_path=work / "plain.log",
            ),
            "signed": AgentProcess(
                args=agent_args(server.url, "signed", stack.docker_host, work / "signed", "sb-s-"),
                log_path=work / "signed.log",
                env={"FLEET_TRUSTED_COMMAND_KEYS": f'["{public}"]'},
            ),
        }
        client = await connect(server.url)
        try:
            for process in agents.values():
                await process.start()
            plain, signed = AgentClient(client, "plain"), AgentClient(client, "signed")
            await wait_until_serving(plain, 30)
            await wait_until_serving(signed, 30)
            unsigned_times: list[float] = []
            signed_times: list[float] = []
            for _ in range(count):
                started = time.perf_counter()
                await plain.request(plain.inspect("absent"), timeout=5)
                unsigned_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                await signed.request(signer.sign(signed.inspect("absent")), timeout=5)
                signed_times.append(time.perf_counter() - started)
        finally:
            for process in agents.values():
                await process.stop()
            await client.close()
            await server.stop()
    return unsigned_times, signed_times


def main(count: int) -> None:
    private, public = generate_key()
    signing, verifying = signatures_per_second(CommandSigner(private), CommandVerifier((public,)))
    unsigned, signed = asyncio.run(round_trips(count))
    plain_p50, signed_p50 = statistics.median(unsigned), statistics.median(signed)
    print("signing: Ed25519 over an ApplyCommand's canonical bytes")
    print(f"  sign {signing:,.0f}/s, verify {verifying:,.0f}/s (one core)")
    print(f"  round trip to an agent, {count} Inspect commands each, interleaved:")
    print(f"    unsigned p50 {plain_p50 * 1000:.2f} ms, signed p50 {signed_p50 * 1000:.2f} ms")
    print(
        f"    added {(signed_p50 - plain_p50) * 1000:+.2f} ms per command (target < 1 ms), "
        f"ratio {signed_p50 / plain_p50:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=1000)
    main(parser.parse_args().round_trips)
