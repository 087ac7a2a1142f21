"""What the agent streams back: the outbox (kept while NATS is away), the log shipper,
the metrics publisher and the follower of the engine's events."""
