"""Reading the fleet's streams: FleetFeed (the subscriber API), the log and metrics
views behind `fleetctl logs` and `top`, and the Prometheus exporter."""

from controller.streams.feed import Delivered, FeedStats, FleetFeed

__all__ = ["Delivered", "FeedStats", "FleetFeed"]
