"""Tests of controller/: one folder per package of it."""
