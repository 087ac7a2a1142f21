"""Tests of controller/cli/: fleetctl's verbs, help, errors and output."""
