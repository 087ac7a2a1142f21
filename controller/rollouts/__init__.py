"""The rollout model and the pure decisions made on it: the planner, the transitions,
canary analysis, host health, and the commands a rollout sends. Nothing here talks to
NATS or Docker or reads the clock: time comes in as an argument."""
