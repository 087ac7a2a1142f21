"""Tests of controller/rollouts/: the planner, transitions and analysis, against oracles."""
