"""Fleetwave node agent: the per-host daemon that updates containers safely."""
