"""Compose's durations and byte sizes, by the specification's examples (11-extension,
05-services: "1m30s", "10s", "2.5s"; "b, k, m, g, kb, mb, gb")."""

from __future__ import annotations

import pytest

from controller.compose.units import duration_seconds, size_bytes
from controller.errors import ComposeError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("2.5s", 2.5), ("100ms", 0.1), ("1h", 3600.0),
     ("1h2m3s", 3723.0), ("0", 0.0), ("500us", 0.0005), (5, 5.0)],
)  # fmt: skip
def test_durations_are_read_in_seconds(text: object, seconds: float) -> None:
    assert duration_seconds(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "abc", "1m30", "s", "", "1.5.2s", True])
def test_a_duration_without_units_or_with_junk_is_refused(text: object) -> None:
    with pytest.raises(ComposeError, match=r"^services\.a\.stop_grace_period: "):
        duration_seconds(text, "services.a.stop_grace_period")


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("1k", 1024), ("512m", 512 * 2**20), ("1gb", 2**30), ("1GiB", 2**30),
     ("1.5g", 3 * 2**29), ("64M", 64 * 2**20), (1000, 1000)],
)  # fmt: skip
def test_byte_sizes_are_powers_of_1024(text: object, size: int) -> None:
    assert size_bytes(text, "x") == size


@pytest.mark.parametrize("text", ["lots", "1x", "m", "-1m", False])
def test_a_size_that_is_not_one_is_refused(text: object) -> None:
    with pytest.raises(ComposeError, match=r"^services\.a\.mem_limit: "):
        size_bytes(text, "services.a.mem_limit")
