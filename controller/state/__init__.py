"""The fleet's state in JetStream KV: the stores, the host inventory, and the intents
fleetctl records (start, pause, undo a rollout; set and roll out config files)."""
