"""The name programs written before the controller was split into packages import
FleetFeed by; it lives in controller.streams."""

from controller.streams.feed import Delivered, FleetFeed

__all__ = ["Delivered", "FleetFeed"]
