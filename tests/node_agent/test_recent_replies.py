"""Which replies the agent sends again after its link to NATS died silently."""

from __future__ import annotations

from node_agent.recent_replies import KEPT, RecentReplies


class FakeClock:
    """Seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_replies_sent_in_the_window_before_the_loss_was_noticed_are_sent_again_once() -> None:
    clock = FakeClock()
    replies = RecentReplies(window=4.0, clock=clock)
    replies.sent("_INBOX.a.1", b"long before")
    clock.now += 10
    replies.sent("_INBOX.a.2", b"just before")
    clock.now += 3
    replies.disconnected()
    clock.now += 1
    replies.sent("_INBOX.a.3", b"while down: nats-py buffers it")
    assert replies.to_resend() == [("_INBOX.a.2", b"just before")]
    assert replies.to_resend() == []  # a second reconnect sends nothing twice


def test_nothing_is_sent_again_after_a_reconnect_without_a_noticed_loss() -> None:
    replies = RecentReplies(window=4.0, clock=FakeClock())
    replies.sent("_INBOX.a.1", b"fine")
    assert replies.to_resend() == []


def test_only_the_most_recent_replies_are_kept() -> None:
    clock = FakeClock()
    replies = RecentReplies(window=4.0, clock=clock)
    for index in range(KEPT + 10):
        replies.sent(f"_INBOX.a.{index}", b"x")
    replies.disconnected()
    resend = replies.to_resend()
    assert len(resend) == KEPT
    assert resend[0][0] == "_INBOX.a.10"


def test_a_refusal_names_a_copy_only_for_subjects_sent_again_after_the_last_reconnect() -> None:
    clock = FakeClock()
    replies = RecentReplies(window=4.0, clock=clock)
    replies.sent("_INBOX.Ctl.AbC", b"x")
    refusal = 'nats: permissions violation for publish to "_inbox.ctl.abc"'
    assert not replies.refused_copy(refusal)  # nothing was sent again yet
    replies.disconnected()
    assert replies.to_resend() == [("_INBOX.Ctl.AbC", b"x")]
    assert replies.refused_copy(refusal)
    assert not replies.refused_copy('nats: permissions violation for publish to "fleet.cmd.b"')
    assert not replies.refused_copy("nats: unexpected EOF _inbox.ctl.abc")
