"""Fleetwave controller: planner, executor, state store and the fleetctl CLI."""
