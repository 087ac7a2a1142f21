"""Tests of node_agent/: the daemon, command handling, the state dir."""
