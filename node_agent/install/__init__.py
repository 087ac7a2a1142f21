"""`fleet-agent install`: an enrolment bundle put in place, and the agent started from it."""
