"""Tests of controller/state/: the KV stores."""
