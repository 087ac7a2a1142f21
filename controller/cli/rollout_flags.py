"""The flags that describe how a rollout moves through the fleet, shared by `rollout
start` and `config rollout`, and the one mapping from them to a RolloutSpec."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError

from controller.cli.base import EXIT_INVALID, fail, invalid_flags, parse_selector
from controller.rollouts.model import AnalysisCheck, FailureAction, RolloutSpec

MaxUnavailableOption = Annotated[str, typer.Option(help="count or percentage")]
CanaryOption = Annotated[str | None, typer.Option(help="first wave size, then wait")]
AutoPromoteOption = Annotated[float | None, typer.Option(help="seconds")]
PartitionOption = Annotated[int | None, typer.Option(help="only ordinals >= N")]
SelectorOption = Annotated[str | None, typer.Option(help="k=v,... host labels")]
MaxFailureRatioOption = Annotated[float, typer.Option()]
FailureActionOption = Annotated[FailureAction, typer.Option()]
ProgressDeadlineOption = Annotated[float, typer.Option(help="seconds")]
CheckOption = Annotated[
    list[str] | None,
    typer.Option(
        "--check",
        metavar="CHECK",
        help="canary analysis, repeatable: [name=]metric<=number with metric one of "
        "restarts, unhealthy, memory_ratio, memory_bytes, cpu_percent",
    ),
]


def rollout_spec(
    selector: str | None, checks: list[str] | None = None, **flags: Any
) -> RolloutSpec:
    """The RolloutSpec the flags describe; a bad flag is one line and exit 2."""
    try:
        analysis = tuple(AnalysisCheck.parse(text) for text in checks or ())
    except ValueError as exc:  # a --check that does not parse
        fail(f"--check: {exc}", EXIT_INVALID)
    try:
        return RolloutSpec(selector=parse_selector(selector), analysis=analysis, **flags)
    except ValidationError as exc:
        invalid_flags(exc)
