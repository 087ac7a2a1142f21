"""A pass folds every answer that came since the last one into one record: each host's
entry changes as its own answer says, stale answers change nothing, and a record that
is copied with other hosts counts and orders them afresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord, RolloutStatus
from controller.rollouts.transitions import (
    RETRY_DELAY,
    adopt_checks,
    fold,
    progress_news,
    reply_news,
    silence_news,
)
from protocol.models import PrepareReply
from tests.support.records import done, web_rollout

NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
ANSWERED = NOW + timedelta(seconds=5)
LATER = NOW + timedelta(seconds=7)
"""When the pass folds the answers in (an answer waits for the pass in progress)."""
HOSTS = [f"h{i:02d}" for i in range(20)]


def updating_everywhere() -> RolloutRecord:
    updating = {
        h: HostRecord(phase=HostPhase.UPDATING, since=NOW, command_id=f"cmd-{h}") for h in HOSTS
    }
    return web_rollout(updating, NOW, RolloutStatus.RUNNING)


def test_many_answers_folded_in_one_pass_change_each_host_as_its_own_answer_says() -> None:
    start = updating_everywhere()
    answered = HOSTS[:10]
    news = [reply_news(h, f"cmd-{h}", done(h, f"cmd-{h}"), ANSWERED, False) for h in answered]
    news.append(reply_news("h10", "cmd-older", done("h10", "cmd-older"), ANSWERED, False))
    news.append(silence_news("h11", "cmd-h11", ANSWERED, "no answer within 30s"))
    news.append(progress_news("h12", "cmd-h12", "probing"))

    folded = fold(start, news, LATER)

    # The README's rules: a done answer finishes the host (no command in flight, since
    # the answer), silence keeps the command for a retry after a delay, progress is only
    # a detail, and an answer to a command the host no longer waits on changes nothing.
    for host in answered:
        entry = folded.hosts[host]
        assert (entry.phase, entry.command_id, entry.since) == (HostPhase.DONE, None, ANSWERED)
    assert folded.hosts["h10"] == start.hosts["h10"]
    silent = folded.hosts["h11"]
    assert (silent.phase, silent.command_id) == (HostPhase.UPDATING, "cmd-h11")
    assert (silent.attempts, silent.not_before) == (1, ANSWERED + RETRY_DELAY)
    assert folded.hosts["h12"].detail == "probing"
    assert folded.hosts["h12"].command_id == "cmd-h12"
    for host in HOSTS[13:]:
        assert folded.hosts[host] is start.hosts[host]
    # The record changed, and progressed, when the pass wrote it.
    assert (folded.last_progress_at, folded.updated_at) == (LATER, LATER)
    assert folded.count(HostPhase.DONE) == 10
    assert folded.count(HostPhase.UPDATING) == 10


def test_a_second_answer_to_a_command_already_answered_in_the_same_pass_changes_nothing() -> None:
    start = updating_everywhere()
    news = [
        reply_news("h00", "cmd-h00", done("h00", "cmd-h00"), LATER, False),
        silence_news("h00", "cmd-h00", LATER, "no answer within 30s"),
    ]

    folded = fold(start, news, LATER)

    assert folded.hosts["h00"].phase is HostPhase.DONE
    assert folded.hosts["h00"].attempts == 0


def test_an_operators_change_between_answers_is_applied_in_its_place() -> None:
    start = updating_everywhere()

    def pause(record: RolloutRecord) -> RolloutRecord:
        # The change sees the answer that came before it, and not the one after.
        assert record.hosts["h00"].phase is HostPhase.DONE
        assert record.hosts["h01"].phase is HostPhase.UPDATING
        return record.model_copy(update={"paused": True})

    folded = fold(
        start,
        [
            reply_news("h00", "cmd-h00", done("h00", "cmd-h00"), LATER, False),
            pause,
            reply_news("h01", "cmd-h01", done("h01", "cmd-h01"), LATER, False),
        ],
        LATER,
    )

    assert folded.paused
    assert folded.count(HostPhase.DONE) == 2


def test_no_news_leaves_the_very_same_record() -> None:
    start = updating_everywhere()
    stale = reply_news("h00", "cmd-gone", done("h00", "cmd-gone"), LATER, False)

    assert fold(start, [stale], LATER) is start


def test_a_copy_with_other_hosts_counts_and_orders_them_afresh() -> None:
    start = updating_everywhere()
    assert start.count(HostPhase.UPDATING) == 20  # the index of the first hosts is made
    added = HostRecord(phase=HostPhase.PENDING, since=LATER)

    grown = start.with_host("a-first", added)
    finished = start.model_copy(
        update={
            "hosts": {
                h: e.model_copy(update={"phase": HostPhase.DONE}) for h, e in start.hosts.items()
            }
        }
    )

    assert grown.ordered_hosts() == ("a-first", *HOSTS)
    assert grown.count(HostPhase.UPDATING) == 20
    assert grown.in_phase(HostPhase.PENDING) == ("a-first",)
    assert (finished.count(HostPhase.UPDATING), finished.count(HostPhase.DONE)) == (0, 20)
    assert finished.in_phase(HostPhase.DONE) == tuple(HOSTS)
    assert start.count(HostPhase.UPDATING) == 20
    assert start.model_copy() == start


def test_checks_sent_before_a_pass_are_adopted_as_that_pass_would_and_their_answers_fold() -> None:
    hosts = {h: HostRecord(since=NOW) for h in HOSTS[:4]}
    hosts["h00"] = HostRecord(phase=HostPhase.PREPARING, since=NOW, command_id="cmd-h00")
    silent_since = NOW - timedelta(seconds=40)
    hosts["h02"] = HostRecord(since=NOW, no_heartbeat_since=silent_since)
    hosts["h03"] = HostRecord(phase=HostPhase.READY, since=NOW, digest="sha256:" + "1" * 64)
    start = web_rollout(hosts, NOW)
    sent = {"h01": "cmd-h01", "h02": "cmd-h02", "h03": "cmd-h03", "gone": "cmd-gone"}

    adopted = adopt_checks(start, sent, LATER)
    answer = PrepareReply(sender="h01", in_reply_to="cmd-h01", service="web", ready=True)
    folded = fold(adopted, [reply_news("h01", "cmd-h01", answer, LATER, False)], LATER)

    # README: a host is checked once it is pending; its check is on record under the
    # id it went with, and its answer counts like any other. A host past pending, or
    # no longer in the rollout, is left as it is.
    assert adopted.hosts["h02"] == HostRecord(
        phase=HostPhase.PREPARING,
        since=LATER,
        command_id="cmd-h02",
        no_heartbeat_since=silent_since,  # what heartbeats said stays
    )
    assert adopted.hosts["h00"] is start.hosts["h00"]
    assert adopted.hosts["h03"] is start.hosts["h03"]
    assert "gone" not in adopted.hosts
    assert adopted.count(HostPhase.PREPARING) == 3
    assert folded.hosts["h01"].phase is HostPhase.READY
    assert adopt_checks(start, {"h03": "cmd-h03"}, LATER) is start
