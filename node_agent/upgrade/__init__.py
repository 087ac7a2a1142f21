"""The agent upgrading itself: a handoff between the running agent and its successor."""
