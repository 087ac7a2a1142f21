from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import subjects
from protocol.errors import InvalidSubject
from protocol.subjects import ParsedSubject, SubjectFamily, parse_subject
from tests.support.strategies import host_ids, tokens

parsed_subjects = st.one_of(
    st.builds(ParsedSubject, family=st.just(SubjectFamily.COMMAND), host=host_ids),
    st.builds(ParsedSubject, family=st.just(SubjectFamily.EVENT), host=host_ids, event_type=tokens),
    st.builds(ParsedSubject, family=st.just(SubjectFamily.EVENT), event_type=tokens),
    st.builds(ParsedSubject, family=st.just(SubjectFamily.LOGS), host=host_ids, service=tokens),
    st.builds(ParsedSubject, family=st.just(SubjectFamily.METRICS), host=host_ids),
)


@given(parsed_subjects)
def test_building_then_parsing_a_subject_gives_back_what_it_names(parsed: ParsedSubject) -> None:
    assert parse_subject(parsed.build()) == parsed


@given(st.text(max_size=80))
def test_parsing_any_text_gives_a_subject_or_an_invalid_subject_error(text: str) -> None:
    try:
        parsed = parse_subject(text)
    except InvalidSubject:
        return
    assert parsed.build() == text


def test_the_subjects_follow_the_design() -> None:
    assert subjects.command_subject("web-1") == "fleet.cmd.web-1"
    assert (
        subjects.host_event_subject("web-1", "update_progress") == "fleet.evt.web-1.update_progress"
    )
    assert subjects.controller_event_subject("rollout") == "fleet.evt.controller.rollout"
    assert subjects.log_subject("web-1", "api") == "fleet.logs.web-1.api"
    assert subjects.metrics_subject("web-1") == "fleet.metrics.web-1"
    assert subjects.host_events_wildcard("web-1") == "fleet.evt.web-1.>"


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "*", ">", "a>", "é", "x" * 65, "web/1"])
def test_a_host_id_that_is_not_one_token_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSubject, match="host id"):
        subjects.command_subject(bad)


def test_no_host_may_be_called_controller() -> None:
    with pytest.raises(InvalidSubject, match="reserved"):
        subjects.command_subject("controller")


def test_a_service_name_with_a_dot_is_refused() -> None:
    with pytest.raises(InvalidSubject, match="service name"):
        subjects.log_subject("web-1", "api.v2")


@pytest.mark.parametrize(
    "bad",
    [
        "nats.cmd.web-1",
        "fleet.cmd",
        "fleet.cmd.web-1.extra",
        "fleet.evt.web-1",
        "fleet.jobs.web-1",
        "fleet.logs.web-1.*",
        "fleet.evt.>",
    ],
)
def test_subjects_of_the_wrong_shape_do_not_parse(bad: str) -> None:
    with pytest.raises(InvalidSubject):
        parse_subject(bad)
