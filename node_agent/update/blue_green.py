"""Blue-green on one host: stage the new colour beside the serving one, switch, retire.

The serving copy is always the container named as the service, so everything else the
agent does (status, heartbeat, engine events, Apply) keeps working unchanged; the other
colour is ``<name>--standby``. Which colour a container is comes from its label, never
from its name, so a switch interrupted between its renames is finished by running it
again: it finds both colours wherever they are and puts them where they belong.
"""

from __future__ import annotations

from pathlib import Path

from node_agent.runtime import Inspect
from node_agent.state_files import read_json, write_json
from node_agent.update.container_config import COLOUR_LABEL, config_from_spec, derive_config
from node_agent.update.hooks import run_switch_hook
from node_agent.update.operation import (
    STANDBY_SUFFIX,
    SWITCHING_SUFFIX,
    Emit,
    Operation,
    OperationResult,
    status_from_inspect,
)
from node_agent.update.probes import HealthVerdict, wait_until_healthy
from node_agent.update.updater import ServiceUpdater
from protocol.errors import CommandRefused, RuntimeFault
from protocol.models import OperationOutcome, Reason, UpdatePhase
from protocol.spec import Colour, ServiceSpec, coloured, other_colour


class ColourSpecs:
    """Which spec each colour of a service runs, so a switch knows what is current."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, service: str) -> Path:
        return self._dir / f"{service}.json"

    def get(self, service: str, colour: Colour) -> ServiceSpec | None:
        value = (read_json(self._path(service)) or {}).get(colour)
        return ServiceSpec.model_validate(value) if value else None

    def put(self, spec: ServiceSpec, colour: Colour) -> None:
        record = read_json(self._path(spec.name)) or {}
        record[colour] = spec.model_dump(mode="json")
        write_json(self._path(spec.name), record)


def colour_of(info: Inspect | None) -> Colour:
    """A container's colour; one that predates blue-green is blue (it has the usual port)."""
    label = ((info or {}).get("Config") or {}).get("Labels") or {}
    value = label.get(COLOUR_LABEL)
    return "green" if value == "green" else "blue"


class BlueGreenUpdater:
    def __init__(self, updater: ServiceUpdater, colours: ColourSpecs) -> None:
        self._updater = updater
        self._runtime = updater.runtime
        self._colours = colours

    def _names(self, service: str) -> tuple[str, str, str]:
        main = self._updater.main_name(service)
        return main, main + STANDBY_SUFFIX, main + SWITCHING_SUFFIX

    async def _copies(self, service: str) -> dict[Colour, tuple[str, Inspect]]:
        """Each colour's container, by label, wherever an interrupted switch left it."""
        found: dict[Colour, tuple[str, Inspect]] = {}
        for name in self._names(service):
            info = await self._runtime.inspect_container(name)
            if info is not None:
                found.setdefault(colour_of(info), (name, info))
        return found

    # ---- stage ----

    async def stage(
        self, operation_id: str, spec: ServiceSpec, colour: Colour, emit: Emit
    ) -> OperationResult:
        if spec.blue_green is None:
            raise CommandRefused(
                "not_blue_green", f"the spec of {spec.name} has no blue_green settings"
            )
        main, standby, _ = self._names(spec.name)
        serving = await self._runtime.inspect_container(main)
        if serving is not None and colour_of(serving) == colour:
            raise CommandRefused(
                "colour_serving",
                f"{colour} is the serving colour of {spec.name} here; stage the other one",
            )
        target = coloured(spec, colour)
        op = Operation(operation_id, target, emit)
        serving_spec = self._updater.services.current(spec.name)
        if serving is not None and serving_spec is not None:
            # What serves now, kept under its colour: a switch back to it (a copy from
            # before blue-green included) puts the agent's record back on that spec.
            self._colours.put(serving_spec, colour_of(serving))
        image = await self._updater.local_image(target)
        sync = self._updater.config
        container_spec = await sync.sync_for_start(target, await sync.files_for_start(target))
        await self._runtime.remove(standby)  # a copy left from an earlier rollout
        if serving is not None:
            serving_image = await self._runtime.inspect_image(serving["Image"])
            config, host_config = derive_config(
                serving, serving_image, container_spec, image, self._updater.agent_id
            )
        else:
            config, host_config = config_from_spec(container_spec, image, self._updater.agent_id)
        config["Labels"][COLOUR_LABEL] = colour
        port = spec.blue_green.port_of(colour)
        await emit(UpdatePhase.STARTING_NEW, f"starting {colour} ({image}) on port {port}")
        op.mark("starting_new")

        async def soaking() -> None:
            await emit(UpdatePhase.SOAKING, "passed; staying healthy for min time")

        try:
            new_id = await self._runtime.create_container(standby, config, host_config)
            await self._runtime.start(new_id)
        except RuntimeFault as exc:
            verdict = HealthVerdict(False, f"could not start the {colour} copy: {exc.message}")
        else:
            await emit(UpdatePhase.PROBING, f"probing {standby}")
            self._updater.failpoint("stage_probing")
            verdict = await wait_until_healthy(target.health, self._runtime, standby, soaking)
        if not verdict.healthy:
            await emit(UpdatePhase.RESTORING, verdict.reason)
            bundle = await self._updater.failure_bundle(op, standby, verdict)
            await self._runtime.remove(standby)
            await emit(UpdatePhase.ROLLED_BACK, f"{colour} failed; {main} kept serving")
            status = status_from_inspect(spec.name, serving)
            return OperationResult(OperationOutcome.ROLLED_BACK, status, bundle, [bundle.reason])
        self._colours.put(target, colour)
        await emit(UpdatePhase.DONE, f"{colour} staged and healthy next to the serving copy")
        info = await self._runtime.inspect_container(standby)
        return OperationResult(OperationOutcome.DONE, status_from_inspect(spec.name, info))

    # ---- apply in place (convergence) ----

    async def apply_in_colour(
        self,
        operation_id: str,
        spec: ServiceSpec,
        colour: Colour,
        emit: Emit,
        rollout_id: str | None,
    ) -> OperationResult:
        """Update the serving copy in place with ``spec``, a colour's spec (``coloured``):
        convergence bringing a late, outdated or drifted host to what the fleet serves,
        or a rolling rollout of a service that runs in colours. The update itself runs
        the switch hook once the new copy is healthy (the host may serve a colour or a
        port it did not before)."""
        _, *others = self._names(spec.name)
        for name in others:
            info = await self._runtime.inspect_container(name)
            if info is not None and colour_of(info) == colour:
                # A copy of the same colour holds the same port: one left behind when
                # this host missed a switch (or a switch was interrupted here).
                await self._runtime.remove(name)
        return await self._updater.apply(operation_id, spec, emit, rollout_id)

    # ---- switch ----

    async def switch(
        self, operation_id: str, service: str, colour: Colour, remove_other: bool, emit: Emit
    ) -> OperationResult:
        main, standby, switching = self._names(service)
        copies = await self._copies(service)
        if colour not in copies:
            raise CommandRefused("colour_missing", f"no {colour} copy of {service} on this host")
        (target_name, target), other = copies[colour], copies.get(other_colour(colour))
        if target_name != main:
            if other is not None and other[0] == main:
                await self._runtime.rename(main, switching)
                other = (switching, other[1])
                self._updater.failpoint("switch_half_renamed")
            await self._runtime.rename(target["Id"], main)
        if other is not None and other[0] != standby:
            await self._runtime.rename(other[1]["Id"], standby)
        if not target["State"]["Running"]:
            await self._runtime.start(target["Id"])
        self._record_current(service, colour)
        await emit(UpdatePhase.DONE, f"{colour} is the serving copy")
        failure = await self._run_hook(service, colour)
        if remove_other and other is not None:
            grace = self._updater.services.current(service)
            await self._runtime.stop(other[1]["Id"], grace.stop_grace_period if grace else 10)
            await self._runtime.remove(other[1]["Id"])
        status = await self._updater.status(service)
        if failure is not None:
            return OperationResult(OperationOutcome.FAILED, status, reasons=[failure])
        # The other colour's image stays: its copy uses it, or the switch-back's spec names it.
        await self._updater.retention.after_update(service, main, operation_id)
        return OperationResult(OperationOutcome.DONE, status)

    def _record_current(self, service: str, colour: Colour) -> None:
        current = self._colours.get(service, colour) or self._updater.services.current(service)
        if current is None:
            return
        previous = self._colours.get(service, other_colour(colour))
        if self._updater.services.current(service) != current:
            self._updater.services.record_update(current, previous)

    async def _run_hook(self, service: str, colour: Colour) -> Reason | None:
        # The colour's own settings, or (a copy from before blue-green has none) those of
        # the other colour: routers are told in the terms of the newest rollout.
        specs = (
            self._colours.get(service, colour),
            self._colours.get(service, other_colour(colour)),
        )
        blue_green = next((s.blue_green for s in specs if s and s.blue_green), None)
        if blue_green is None:
            return None
        host = self._updater.settings.host_id
        failed = await run_switch_hook(blue_green, service, colour, host)
        return None if failed is None else Reason(code="switch_hook_failed", text=failed)

    # ---- retire ----

    async def retire(self, service: str, colour: Colour, emit: Emit) -> OperationResult:
        main, _, _ = self._names(service)
        copies = await self._copies(service)
        found = copies.get(colour)
        if found is not None and found[0] == main:
            raise CommandRefused(
                "colour_serving", f"{colour} is the serving colour of {service}; not removing it"
            )
        if found is not None:
            spec = self._colours.get(service, colour)
            await self._runtime.stop(found[1]["Id"], spec.stop_grace_period if spec else 10)
            self._updater.failpoint("retire_stopped")
            await self._runtime.remove(found[1]["Id"])
        await emit(UpdatePhase.DONE, f"{colour} copy of {service} removed")
        return OperationResult(OperationOutcome.DONE, await self._updater.status(service))
