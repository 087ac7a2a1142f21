"""Tests of protocol/: messages, codec, schema, signing, specs, subjects."""
