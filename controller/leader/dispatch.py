"""Sending commands to agents, and holding their answers for the leader's next pass.

A command goes once per id, and again only when it went unanswered (silence) or after a
restart or takeover: the agent returns its recorded outcome to a resent id instead of
running it twice. An answer waits here until a pass folds it into the rollout's record;
until then its command is not sent again, though the record still shows it in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import nats.errors
from nats.aio.client import Client

from controller.rollouts.commands import (
    apply_app_command,
    apply_command,
    blue_green_command,
    config_command,
    pinned,
    pinned_app,
    prepare_command,
    remove_command,
    reverting_app,
    without_pre_update,
)
from controller.rollouts.model import Change, HostPhase, RolloutRecord
from controller.rollouts.transitions import HostNews, progress_news, reply_news, silence_news
from controller.rollouts.workload import (
    COPIES,
    app_update_timeout,
    healthy_deadline,
    specs_of,
    stop_grace,
)
from controller.settings import ControllerSettings
from protocol import subjects
from protocol.app import AppSpec
from protocol.codec import decode, encode
from protocol.envelope import new_message_id
from protocol.errors import ProtocolError
from protocol.models import (
    Command,
    HostFacts,
    OperationReply,
    PrepareReply,
    UpdateProgress,
    utc_now,
)
from protocol.spec import ServiceSpec

log = logging.getLogger("fleetctl.controller")
SEND_BATCH = 32
"""Commands built and handed to the client before it writes them out (see _take_turn)."""

QUIET_AFTER = 0.25
"""Seconds without an answer after which the dispatch counts as idle (see idle)."""

News = HostNews | Change


def plan_again(record: RolloutRecord) -> RolloutRecord:
    """News that changes nothing: the rollout is planned again by the next pass, which
    comes at once (as for an answer) instead of at the next tick."""
    return record


class Dispatch:
    def __init__(
        self,
        nc: Client,
        settings: ControllerSettings,
        wake: asyncio.Event,
        facts: Mapping[str, HostFacts],
    ) -> None:
        self._nc = nc
        self._settings = settings
        self._wake = wake
        """Set when an answer comes: the leader's loop plans that rollout again at once."""
        self._facts = facts
        """The inventory's hosts (a config command carries the host's own overrides)."""
        self._signer = settings.signer()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._awaiting: dict[str, tuple[str, str, bool]] = {}
        """Per command awaited: its rollout, its host, and whether that is blue-green."""
        self._pending: dict[str, list[News]] = {}
        """Answers not yet written, per rollout: the next pass folds them all into one write."""
        self._answered: dict[str, HostNews] = {}
        """Commands answered whose answer is not written yet: not to be sent again by a
        pass that planned from the record before the answer came."""
        self._next_checks: dict[str, tuple[RolloutRecord, deque[str]]] = {}
        """Per rollout in pre-flight, the hosts its last pass would check next, each
        checked as soon as an answer to a check frees its slot."""
        self._checks_sent: dict[str, dict[str, str]] = {}
        """Per rollout, the checks sent that way that are not on record yet (host -> id)."""
        self._turns: deque[asyncio.Future[None]] = deque()
        """Commands waiting for their turn to be built and sent (see _take_turn)."""
        self._granting = False
        self._unsent: set[str] = set()
        """Commands started and not yet built and handed to the client (nor called off)."""
        self._sending_waits: list[tuple[set[str], asyncio.Future[None]]] = []
        """Each all_sent call: the commands it still waits for."""
        self._last_answer = 0.0
        """When the last answer came (the loop's clock)."""

    def pending(self, rollout_id: str) -> list[News]:
        """The news waiting for ``rollout_id`` (the list itself: more may come meanwhile)."""
        return self._pending.get(rollout_id, [])

    def with_news(self) -> list[str]:
        return [rollout for rollout, news in self._pending.items() if news]

    def folded(self, rollout_id: str, count: int) -> None:
        """The first ``count`` news of ``rollout_id`` are written into its record."""
        news = self._pending.get(rollout_id, [])
        self._forget(news[:count])
        del news[:count]

    def drop(self, rollout_id: str) -> None:
        """The rollout is over (or gone): its news change nothing any more."""
        self._forget(self._pending.pop(rollout_id, []))
        self._next_checks.pop(rollout_id, None)
        self._checks_sent.pop(rollout_id, None)

    def queue_checks(self, record: RolloutRecord, hosts: Sequence[str]) -> None:
        """The checks to start next, in order, as answers to checks come (none: stop).

        A round of pre-flight is an answer in, a pass, the next check out; the pass is
        most of the time between two rounds, and a check changes nothing. So its pass
        names the next checks beforehand and each goes when an answer frees its slot;
        the next pass puts it on record (``checks_sent``), as it would have chosen it."""
        sent = self._checks_sent.get(record.id, {})
        queue = deque(host for host in hosts if host not in sent)
        if queue:
            self._next_checks[record.id] = (record, queue)
        else:
            self._next_checks.pop(record.id, None)

    def checks_sent(self, rollout_id: str) -> dict[str, str]:
        """The checks sent from the queue and not yet on record: host -> command id."""
        return dict(self._checks_sent.get(rollout_id, {}))

    def checks_recorded(self, rollout_id: str, hosts: Mapping[str, str]) -> None:
        """These checks are on record now (or were called off): no longer held here."""
        sent = self._checks_sent.get(rollout_id, {})
        for host, command_id in hosts.items():
            if sent.get(host) == command_id:
                del sent[host]
        if not sent:
            self._checks_sent.pop(rollout_id, None)

    def stop_checks(self) -> None:
        """No more checks from the queues, and none held for a pass (leadership changed:
        the leader's passes put its own checks on record)."""
        self._next_checks.clear()
        self._checks_sent.clear()

    def _next_check(self, rollout_id: str) -> None:
        queued = self._next_checks.get(rollout_id)
        if queued is None:
            return
        record, queue = queued
        if not queue:
            return
        host, command_id = queue.popleft(), new_message_id()
        self._checks_sent.setdefault(rollout_id, {})[host] = command_id
        self._start(record, host, command_id, check=True)

    def sending(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def cancel(self, command_ids: list[str]) -> None:
        """Stop waiting for these commands' answers (they are not on record after all)."""
        for command_id in command_ids:
            task = self._tasks.get(command_id)
            if task is not None:
                task.cancel()

    def ensure(self, record: RolloutRecord, host: str, command_id: str) -> None:
        self._start(record, host, command_id, check=False)

    def _start(self, record: RolloutRecord, host: str, command_id: str, *, check: bool) -> None:
        if command_id in self._tasks or command_id in self._answered:
            return
        task = asyncio.create_task(
            self._command(record, host, command_id, check),
            name=f"command-{host}-{command_id[:8]}",
        )
        self._tasks[command_id] = task
        self._awaiting[command_id] = (record.id, host, record.blue_green)
        self._unsent.add(command_id)
        task.add_done_callback(lambda _: self._ended(command_id))

    def _ended(self, command_id: str) -> None:
        self._tasks.pop(command_id, None)
        self._awaiting.pop(command_id, None)
        self._sent(command_id)  # if called off before its turn

    def _sent(self, command_id: str) -> None:
        self._unsent.discard(command_id)
        for waiting, done in self._sending_waits:
            waiting.discard(command_id)
            if not waiting and not done.done():
                done.set_result(None)
        self._sending_waits = [(w, d) for w, d in self._sending_waits if not d.done()]

    def _build(
        self, record: RolloutRecord, host: str, command_id: str, check: bool
    ) -> tuple[Command, float]:
        entry = record.hosts[host]
        expires = utc_now() + timedelta(seconds=self._settings.command_ttl)
        if record.config is not None:
            facts = self._facts.get(host)
            labels = facts.labels if facts is not None else {}
            command = config_command(record, host, labels, expires, command_id)
            # Verifying the new file, and on failure the restored one: twice the deadline.
            deadline = 2 * (healthy_deadline(record.target) or 30.0)
            timeout = deadline + 2 * stop_grace(record.target) + self._settings.command_slack
            return command, timeout
        if check or entry.phase is HostPhase.PREPARING:
            prepare = prepare_command(record, host, expires, command_id, rollout_id=record.id)
            pulls = len(specs_of(record.target))  # an app's members are pulled in turn
            return prepare, self._settings.prepare_timeout * pulls
        if record.removing:
            # Each copy (serving, set aside, next, the other colour) is stopped in turn.
            timeout = COPIES * stop_grace(record.target) + self._settings.command_slack
            return remove_command(record, host, expires, command_id), timeout
        if isinstance(record.target, AppSpec):
            return self._build_app(record, host, expires, command_id)
        if entry.phase is HostPhase.UPDATING or record.blue_green:
            spec = pinned(record.target, entry.digest, record.spec.min_healthy_time)
        else:
            assert isinstance(record.previous, ServiceSpec), "reverts only to a previous spec"
            spec = without_pre_update(record.previous)  # a way back is never refused
        deadline = spec.health.healthy_deadline if spec.health else 0.0
        hooks = sum(h.timeout for h in (spec.hooks.pre_update, spec.hooks.post_update) if h)
        timeout = deadline + spec.stop_grace_period + hooks + self._settings.command_slack
        # A blue-green rollout's switch, and an update in the serving colour, run the
        # switch hook too.
        hook = spec.blue_green.hook_timeout if spec.blue_green else 0.0
        if record.blue_green:
            return blue_green_command(record, host, spec, expires, command_id), timeout + hook
        if record.in_colour is not None:
            timeout += hook
        return apply_command(record, host, spec, expires, command_id), timeout

    def _build_app(
        self, record: RolloutRecord, host: str, expires: datetime, command_id: str
    ) -> tuple[Command, float]:
        """An app's update (or its revert): every member's, as one command."""
        entry = record.hosts[host]
        if entry.phase is HostPhase.UPDATING:
            assert isinstance(record.target, AppSpec)
            app = pinned_app(record.target, entry.digests, record.spec.min_healthy_time)
        else:
            assert isinstance(record.previous, AppSpec), "reverts only to a previous app"
            app = reverting_app(record.previous)
        was = record.previous if entry.phase is HostPhase.UPDATING else record.target
        timeout = app_update_timeout(app, was) + self._settings.command_slack
        return apply_app_command(record, host, app, expires, command_id), timeout

    async def _take_turn(self) -> None:
        """Wait until this command may be built and sent: SEND_BATCH at a time.

        A pass starts a wave's commands (500 at 5,000 hosts) together. The client writes
        them out only when its flusher runs, which asyncio schedules behind every command
        task already waiting to run: the first command would wait for the other 499 to be
        built. In batches, the flusher's turn comes after each batch (and whatever else
        was ready then), so the first hosts get their commands sooner. The whole wave
        takes as long to go out as before; each command is stamped when it is built."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        if not self._granting:
            self._granting = True
            asyncio.get_running_loop().call_soon(self._grant)
        await turn

    def _grant(self) -> None:
        granted = 0
        while self._turns and granted < SEND_BATCH:
            turn = self._turns.popleft()
            if not turn.done():  # else its task was cancelled meanwhile
                turn.set_result(None)
                granted += 1
        if self._turns:
            # Called again after the batch's tasks have run (and the flusher, which the
            # first of them woke, has been scheduled).
            asyncio.get_running_loop().call_soon(self._grant)
        else:
            self._granting = False

    async def all_sent(self) -> None:
        """Until every command started before this call has had its turn to go out: a
        pass decides them, and the next pass's work (milliseconds at thousands of hosts)
        waits for them. Not for commands started meanwhile (a check an answer sends):
        a steady stream of those must not hold the passes back."""
        if not self._unsent:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sending_waits.append((set(self._unsent), done))
        await done

    def idle(self) -> bool:
        """Nothing to send, no answer waiting for a pass, and none came for QUIET_AFTER
        seconds: answers come in bursts (a wave's hosts took about as long)."""
        if self._unsent or any(self._pending.values()):
            return False
        return asyncio.get_running_loop().time() - self._last_answer >= QUIET_AFTER

    async def _command(
        self, record: RolloutRecord, host: str, command_id: str, check: bool
    ) -> None:
        await self._take_turn()
        command, timeout = self._build(record, host, command_id, check)
        if self._signer is not None:
            # Signed afresh on every send (a new sent_at): a resend is not a replay.
            command = self._signer.sign(command)
        subject = subjects.command_subject(host)
        try:
            payload = encode(command)
            self._sent(command_id)  # the request hands it to the client at once
            message = await self._nc.request(subject, payload, timeout=timeout)
            reply = decode(message.data)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            silent = isinstance(exc, nats.errors.NoRespondersError)
            why = "no agent answers" if silent else f"no answer within {timeout:.0f}s"
            self._silence(record.id, host, command_id, why)
            return
        except ProtocolError as exc:
            self._silence(record.id, host, command_id, f"undecodable reply: {exc.message}")
            return
        except nats.errors.Error as exc:
            self._silence(record.id, host, command_id, f"bus error: {exc!r}")
            return
        self.record(record.id, reply_news(host, command_id, reply, utc_now(), record.blue_green))
        if isinstance(reply, PrepareReply):  # a check's slot is free: the next one goes
            self._next_check(record.id)

    def answered(self, host: str, reply: OperationReply) -> None:
        """A reply that came as an event (an agent upgrade's, from the successor): taken as
        the answer of the command still awaited, whose request is then given up."""
        command_id = reply.in_reply_to
        waiting = self._awaiting.get(command_id) if command_id else None
        if command_id is None or waiting is None or command_id in self._answered:
            return
        rollout_id, awaited_host, blue_green = waiting
        if host != awaited_host:  # a host answers for its own commands only
            return
        self.record(rollout_id, reply_news(host, command_id, reply, utc_now(), blue_green))
        task = self._tasks.get(command_id)
        if task is not None:
            task.cancel()

    def _silence(self, rollout_id: str, host: str, command_id: str, why: str) -> None:
        log.info("%s: %s: %s; will retry", rollout_id, host, why)
        self.record(rollout_id, silence_news(host, command_id, utc_now(), why))

    def progress(self, news: UpdateProgress) -> None:
        """An agent's phase of a command this controller awaits, for the next full pass
        (it wakes none: a phase is news for people, and the planner does not wait on it).
        A standby, or news of a command already answered, records nothing."""
        if news.rollout_id is None or news.operation_id not in self._tasks:
            return
        doing = progress_news(news.host, news.operation_id, news.phase.value)
        self._pending.setdefault(news.rollout_id, []).append(doing)

    def record(self, rollout_id: str, change: News) -> None:
        """Queue a change (an answer, or silence) for the next pass, and wake that pass now."""
        self._pending.setdefault(rollout_id, []).append(change)
        if isinstance(change, HostNews):
            self._answered[change.command_id] = change
        self._last_answer = asyncio.get_running_loop().time()
        self._wake.set()

    def _forget(self, folded: list[News]) -> None:
        """Answers now written into the record (or of a rollout that is over)."""
        written = {id(change) for change in folded}
        if written and self._answered:
            self._answered = {
                command: change
                for command, change in self._answered.items()
                if id(change) not in written
            }
