"""Tests of controller/leader/: the leader lease."""
