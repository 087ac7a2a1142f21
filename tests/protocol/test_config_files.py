"""Config documents: which content a host gets, how versions advance, what decoding refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from controller.cli.render import config_diff
from protocol.config_files import (
    MAX_CONFIG_FILE,
    ConfigContent,
    ConfigOverride,
    decode_document,
    encode_document,
    first_document,
    parse_config_key,
)
from protocol.errors import InvalidMessage, InvalidSubject, MalformedPayload, PayloadTooLarge
from protocol.spec import ConfigMount

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def content(text: str) -> ConfigContent:
    return ConfigContent.of(text.encode())


def test_a_host_override_wins_over_a_selector_and_a_selector_over_the_base() -> None:
    document = first_document("web", "app.conf", content("base"), NOW)
    document = document.with_content(content("edge"), NOW, selector={"role": "edge"})
    document = document.with_content(content("h1 only"), NOW, host="h1")
    assert document.version == 3
    assert document.for_host("h1", {"role": "edge"}).data == b"h1 only"
    assert document.for_host("h2", {"role": "edge"}).data == b"edge"
    assert document.for_host("h3", {"role": "core"}).data == b"base"


def test_the_selector_set_last_wins_among_matching_selectors() -> None:
    document = first_document("web", "app.conf", content("base"), NOW)
    document = document.with_content(content("eu"), NOW, selector={"region": "eu"})
    document = document.with_content(content("edge"), NOW, selector={"role": "edge"})
    assert document.for_host("h", {"region": "eu", "role": "edge"}).data == b"edge"
    # Setting the eu override again moves it to the end: now it wins.
    document = document.with_content(content("eu 2"), NOW, selector={"region": "eu"})
    assert document.for_host("h", {"region": "eu", "role": "edge"}).data == b"eu 2"
    assert len(document.overrides) == 2


def test_a_new_base_keeps_the_overrides_and_says_what_changed() -> None:
    document = first_document("web", "app.conf", content("one"), NOW)
    document = document.with_content(content("h1"), NOW, host="h1")
    assert document.change == "set for host=h1"
    document = document.with_content(content("two"), NOW)
    assert document.change == "set"
    assert document.for_host("h1", {}).data == b"h1"
    assert document.for_host("h2", {}).data == b"two"


def test_removing_an_override_is_a_new_version_and_its_hosts_fall_back() -> None:
    document = first_document("web", "app.conf", content("base"), NOW)
    document = document.with_content(content("edge"), NOW, selector={"role": "edge"})
    document = document.with_content(content("h1"), NOW, host="h1")
    assert document.without_override(NOW, host="h2") is None
    assert document.without_override(NOW, selector={"role": "core"}) is None
    without = document.without_override(NOW, selector={"role": "edge"})
    assert without is not None
    assert (without.version, without.change) == (4, "removed override for role=edge")
    assert without.for_host("h2", {"role": "edge"}).data == b"base"
    assert without.for_host("h1", {"role": "edge"}).data == b"h1"


def test_a_document_survives_its_round_trip_through_kv_bytes() -> None:
    document = first_document("web", "app.conf", ConfigContent.of(bytes(range(256))), NOW)
    assert decode_document(encode_document(document)) == document


def test_content_whose_hash_does_not_match_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not match its hash"):
        ConfigContent(data=b"tampered", sha256=content("original").sha256)


def test_decoding_refuses_garbage_wrong_fields_and_a_forged_hash() -> None:
    with pytest.raises(MalformedPayload):
        decode_document(b"\x00\xff not json")
    with pytest.raises(InvalidMessage):
        decode_document(b'{"service": "web"}')
    forged = encode_document(first_document("web", "app.conf", content("a"), NOW))
    forged = forged.replace(b'"YQ=="', b'"Yg=="')  # base64 of "a" -> "b", hash unchanged
    with pytest.raises(InvalidMessage, match="hash"):
        decode_document(forged)


def test_a_file_over_the_limit_and_a_document_over_the_limit_are_refused() -> None:
    with pytest.raises(ValidationError):
        ConfigContent.of(b"x" * (MAX_CONFIG_FILE + 1))
    big = ConfigContent.of(bytes(range(256)) * (MAX_CONFIG_FILE // 256))
    document = first_document("web", "app.conf", big, NOW)
    for host in ("h1", "h2"):
        document = document.with_content(big, NOW, host=host)
    with pytest.raises(PayloadTooLarge, match="overrides"):
        encode_document(document)


def test_names_that_are_not_plain_file_names_are_refused() -> None:
    for bad in ("../etc/passwd", "a/b", ".hidden", "trailing.", "a..b", ""):
        with pytest.raises(ValidationError):
            first_document("web", bad, content("x"), NOW)
        with pytest.raises(ValidationError):
            ConfigMount(files=(bad,))
    with pytest.raises(InvalidSubject):
        parse_config_key("nodot")


def test_an_override_names_exactly_one_scope() -> None:
    with pytest.raises(ValidationError, match="either one host or a non-empty selector"):
        ConfigOverride(content=content("x"))
    with pytest.raises(ValidationError, match="either one host or a non-empty selector"):
        ConfigOverride(host="h1", selector={"a": "b"}, content=content("x"))


def test_the_diff_shows_changed_lines_and_overrides() -> None:
    old = first_document("web", "app.conf", content("message=one\nlevel=1\n"), NOW)
    new = old.with_content(content("message=two\nlevel=1\n"), NOW)
    new = new.with_content(content("h1"), NOW, host="h1")
    lines = config_diff(old, new)
    assert "-message=one\n" in lines
    assert "+message=two\n" in lines
    assert " level=1\n" in lines
    assert lines[-1] == "override host=h1: added\n"
    binary = first_document("web", "app.conf", ConfigContent.of(b"\xff\xfe"), NOW)
    assert config_diff(binary, binary.with_content(ConfigContent.of(b"\xff"), NOW)) == [
        "binary web/app.conf differs (v1 -> v2)\n"
    ]
