"""The name programs written before the controller was split into packages import the
subscriber API by; it lives in controller.streams (controller/streams/feed.py)."""

from controller.streams.feed import ACK_TIMEOUT, EPHEMERAL_IDLE, Delivered, FeedStats, FleetFeed

__all__ = ["ACK_TIMEOUT", "EPHEMERAL_IDLE", "Delivered", "FeedStats", "FleetFeed"]
