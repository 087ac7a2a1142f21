"""Tests of fleet_registry/: the registry client."""
