"""Compose files as Fleetwave apps: load, interpolate, validate against the Compose
Specification's schema, refuse what Fleetwave does not do, and convert to an AppSpec."""
