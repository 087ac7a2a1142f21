"""Tests of controller/streams/: FleetFeed and the metrics reader."""
