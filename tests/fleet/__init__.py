"""The whole fleet end to end: controller, agents, bus, registries and engine."""
