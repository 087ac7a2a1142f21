"""Apps: several containers a host updates as one unit (node_agent/apps/group.py)."""
