"""Scraping a running `fleetctl exporter` the way Prometheus would, and parsing it with
prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Series = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(port: int) -> Series:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return series


async def scrape_until(port: int, name: str, labels: dict[str, str], value: float) -> Series:
    """Scrape again until the series ``name{labels}`` has ``value``."""
    key = tuple(sorted(labels.items()))
    last: Series = {}
    for _ in range(300):
        try:
            last = await asyncio.to_thread(scrape, port)
        except OSError:
            last = {}
        if last.get(name, {}).get(key) == value:
            return last
        await asyncio.sleep(0.1)
    shown = last.get(name) if name in last else f"no such series among {sorted(last)}"
    raise AssertionError(f"{name}{labels} never became {value}; last scrape: {shown}")
