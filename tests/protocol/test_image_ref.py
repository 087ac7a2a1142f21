from __future__ import annotations

import pytest
from hypothesis import given

from protocol.errors import InvalidImageReference
from protocol.image_ref import ImageReference, parse_image_reference
from tests.support.strategies import image_refs

DIGEST = "sha256:" + "ab" * 32


@given(image_refs())
def test_a_valid_reference_prints_back_to_itself(text: str) -> None:
    assert str(parse_image_reference(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", ImageReference(None, "busybox", None, None)),
        ("library/busybox:1.36", ImageReference(None, "library/busybox", "1.36", None)),
        (
            "127.0.0.1:5000/demo/web:1.0.0",
            ImageReference("127.0.0.1:5000", "demo/web", "1.0.0", None),
        ),
        ("localhost/web", ImageReference("localhost", "web", None, None)),
        (f"reg.example.com/a/b@{DIGEST}", ImageReference("reg.example.com", "a/b", None, DIGEST)),
        (f"web:2@{DIGEST}", ImageReference(None, "web", "2", DIGEST)),
    ],
)
def test_references_split_into_registry_repository_tag_and_digest(
    text: str, expected: ImageReference
) -> None:
    assert parse_image_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "non-empty"),
        ("Demo/Web:1.0", "lowercase"),
        ("web:", "tag"),
        ("web:-bad", "tag"),
        ("web@sha256:123", "digest"),
        ("web@md5:" + "a" * 32, "digest"),
        ("web app:1", "white space"),
        ("reg..example.com/web", "registry"),
        ("127.0.0.1:5000/", "component"),
        ("web//app", "component"),
        ("a/" * 130 + "b", "longer than"),
    ],
)
def test_invalid_references_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidImageReference, match=why):
        parse_image_reference(text)


def test_pinning_keeps_the_tag_and_adds_the_digest() -> None:
    pinned = parse_image_reference("127.0.0.1:5000/demo/web:1.1.0").pinned(DIGEST)
    assert str(pinned) == f"127.0.0.1:5000/demo/web:1.1.0@{DIGEST}"


def test_pinning_to_something_that_is_not_a_digest_is_refused() -> None:
    with pytest.raises(InvalidImageReference):
        parse_image_reference("web:1").pinned("latest")
