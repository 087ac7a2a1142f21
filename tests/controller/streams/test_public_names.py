"""Names the README documents for other programs stay importable where it says."""

from __future__ import annotations


def test_fleet_feed_is_importable_from_streams_and_by_its_earlier_name() -> None:
    from controller.streams import FleetFeed
    from controller.subscribe import FleetFeed as EarlierName

    assert EarlierName is FleetFeed
