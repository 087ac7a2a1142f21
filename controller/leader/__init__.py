"""What the elected controller runs: the executor's passes over active rollouts, the
leader lease that elects it, and the following of hosts' progress events."""
