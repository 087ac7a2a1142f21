"""Running Fleetwave on this machine, for the tests and the benchmarks: the
local stack's settings, agents as processes or in-process, and a bus client that speaks
to one agent. Not part of the product: no product package imports it."""
