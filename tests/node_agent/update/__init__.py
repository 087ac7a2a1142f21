"""Tests of node_agent/update/: updates, restores, crash recovery, config reloads."""
