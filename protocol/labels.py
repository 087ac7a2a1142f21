"""Host labels and selectors written as text: ``role=edge,region=eu``."""

from __future__ import annotations

from protocol.errors import ConfigurationError


def parse_labels(text: str) -> dict[str, str]:
    """``role=edge,region=eu`` -> {"role": "edge", "region": "eu"}; ConfigurationError if not."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"label {item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels
