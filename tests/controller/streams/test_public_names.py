"""Names the README documents for other programs stay importable where it says."""

from __future__ import annotations


def test_fleet_feed_is_importable_from_streams_and_by_its_earlier_name() -> None:
    from controller import subscribe
    from controller.streams import feed

    assert subscribe.FleetFeed is feed.FleetFeed
    # Everything the module defines for others (classes, functions, constants) is there.
    defined = {
        name
        for name, value in vars(feed).items()
        if not name.startswith("_")
        and (getattr(value, "__module__", None) == feed.__name__ or name.isupper())
    }
    assert defined == set(subscribe.__all__)
