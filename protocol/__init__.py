"""Fleetwave's wire protocol: message models, codec, subject names, errors.

Pure: no I/O, no NATS, no Docker. Both the controller and the node agent import it;
it imports neither (checked by import-linter).
"""

SCHEMA_VERSION = 1
"""The newest envelope schema this code writes and understands."""
