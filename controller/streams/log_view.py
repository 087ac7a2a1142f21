"""Log lines from many hosts, merged into one time-ordered view (``fleetctl logs``).

Batches from different hosts reach the stream interleaved, each covering a fraction
of a second, so lines are held briefly and released in timestamp order: a line is
released once a line ``hold`` seconds newer has been seen, or when the stream goes
quiet. For ``--tail N`` only the newest N lines are kept while reading.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from protocol.models import LogBatch


@dataclass(frozen=True, order=True)
class FleetLogLine:
    timestamp: datetime
    host: str
    sequence: int
    """Arrival order: keeps lines of one timestamp in the order they came."""
    service: str = field(compare=False)
    container_id: str = field(compare=False)
    stream: str = field(compare=False)
    line: str = field(compare=False)

    def text(self, host_width: int, timestamps: bool, service_width: int = 0) -> str:
        """``service_width``: the service too, in a column that wide (an app's member)."""
        when = self.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ ") if timestamps else ""
        service = f" {self.service:<{service_width}}" if service_width else ""
        return f"{self.host:<{host_width}}{service} | {when}{self.line}"

    def json(self) -> str:
        return json.dumps(
            {
                "timestamp": self.timestamp.isoformat(),
                "host": self.host,
                "service": self.service,
                "container_id": self.container_id,
                "stream": self.stream,
                "line": self.line,
            }
        )


def lines_of(batch: LogBatch, first_sequence: int) -> list[FleetLogLine]:
    return [
        FleetLogLine(
            entry.timestamp,
            batch.host,
            first_sequence + index,
            batch.service,
            batch.container_id,
            entry.stream,
            entry.line,
        )
        for index, entry in enumerate(batch.lines)
    ]


class LogMerge:
    def __init__(self, hold: float = 1.0) -> None:
        self._hold = timedelta(seconds=hold)
        self._heap: list[FleetLogLine] = []
        self._newest: datetime | None = None
        self._sequence = 0

    def add(self, batch: LogBatch) -> None:
        for line in lines_of(batch, self._sequence):
            heapq.heappush(self._heap, line)
            if self._newest is None or line.timestamp > self._newest:
                self._newest = line.timestamp
        self._sequence += len(batch.lines)

    def ready(self) -> list[FleetLogLine]:
        """Lines no later batch can precede any more (within ``hold``)."""
        out = []
        while self._heap and self._newest and self._heap[0].timestamp <= self._newest - self._hold:
            out.append(heapq.heappop(self._heap))
        return out

    def drain(self) -> list[FleetLogLine]:
        out = [heapq.heappop(self._heap) for _ in range(len(self._heap))]
        return out


class LogTail:
    """The newest ``limit`` lines of everything added, in time order."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._heap: list[FleetLogLine] = []  # a min-heap: the oldest kept line on top
        self._sequence = 0

    def add(self, batch: LogBatch) -> None:
        for line in lines_of(batch, self._sequence):
            if self._limit is None or len(self._heap) < self._limit:
                heapq.heappush(self._heap, line)
            elif self._limit and line > self._heap[0]:
                heapq.heapreplace(self._heap, line)
        self._sequence += len(batch.lines)

    def lines(self) -> list[FleetLogLine]:
        return sorted(self._heap)
