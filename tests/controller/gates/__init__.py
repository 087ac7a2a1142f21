"""Tests of controller/gates/: the scan and policy gates."""
