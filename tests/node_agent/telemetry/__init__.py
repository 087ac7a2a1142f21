"""Tests of node_agent/telemetry/: logs, metrics and engine events."""
