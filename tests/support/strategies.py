"""Hypothesis strategies that build valid protocol messages of every kind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from protocol import models as m
from protocol import spec as s
from protocol.app import AppSpec, Condition, Dependency, Member, NamedNetwork, NamedVolume
from protocol.config_files import ConfigContent

tokens = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
host_ids = tokens.filter(lambda t: t != "controller")
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
short_text = st.text(max_size=40)
sizes = st.integers(min_value=0, max_value=2**62)
fractions = st.floats(min_value=0, max_value=1e6, allow_nan=False)
digests = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)


@st.composite
def image_refs(draw: st.DrawFn) -> str:
    registry = draw(st.sampled_from([None, "127.0.0.1:5000", "registry.example.com", "localhost"]))
    path = draw(
        st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8})?(/[a-z0-9]{1,8}){0,2}", fullmatch=True)
    )
    tag = draw(st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
    digest = draw(st.none() | digests)
    text = f"{registry}/{path}" if registry else path
    if tag:
        text += f":{tag}"
    if digest:
        text += f"@{digest}"
    return text


ports = st.integers(min_value=1, max_value=65535)
abs_paths = st.from_regex(r"/[a-z0-9/_.-]{0,30}", fullmatch=True)

probes = st.one_of(
    st.builds(s.HttpProbe, port=ports, path=abs_paths, body_contains=st.none() | short_text),
    st.builds(s.TcpProbe, port=ports),
    st.builds(s.ExecProbe, command=st.lists(short_text, min_size=1, max_size=3).map(tuple)),
    st.just(s.DockerHealthProbe()),
)


@st.composite
def health_checks(draw: st.DrawFn) -> s.HealthCheck:
    initial = draw(st.floats(min_value=0, max_value=100))
    min_healthy = draw(st.floats(min_value=0, max_value=100))
    timeout = draw(st.floats(min_value=0.1, max_value=10))
    deadline = draw(st.floats(min_value=max(initial + min_healthy, timeout, 0.1), max_value=86_400))
    return s.HealthCheck(
        probe=draw(probes),
        initial_delay=initial,
        period=draw(st.floats(min_value=0.1, max_value=60)),
        timeout=timeout,
        failure_threshold=draw(st.integers(min_value=1, max_value=10)),
        min_healthy_time=min_healthy,
        healthy_deadline=deadline,
    )


container_settings = st.builds(
    s.ContainerSettings,
    env=st.dictionaries(st.from_regex(r"[A-Z_]{1,10}", fullmatch=True), short_text, max_size=4),
    volumes=st.lists(
        st.builds(s.VolumeMount, kind=st.just("volume"), source=tokens, target=abs_paths)
        | st.builds(s.VolumeMount, kind=st.just("bind"), source=abs_paths, target=abs_paths),
        max_size=3,
    ).map(tuple),
    restart_policy=st.builds(s.RestartPolicy),
    resources=st.builds(
        s.Resources,
        memory_bytes=st.none() | st.integers(min_value=6 * 1024 * 1024, max_value=2**40),
        cpus=st.none() | st.floats(min_value=0.01, max_value=64),
    ),
    user=st.none() | short_text,
    command=st.none() | st.lists(short_text, max_size=3).map(tuple),
    labels=st.dictionaries(tokens, short_text, max_size=3),
    network_mode=st.sampled_from(["host", "none"]),
)

colours = st.sampled_from(s.COLOURS)
blue_greens = st.builds(
    s.BlueGreen,
    port=st.integers(min_value=1, max_value=30000),
    alternate_port=st.integers(min_value=30001, max_value=65535),
    switch_hook=st.none() | st.lists(short_text, min_size=1, max_size=3).map(tuple),
)

config_names = st.from_regex(r"[A-Za-z0-9_-]{1,20}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True)
config_mounts = st.builds(
    s.ConfigMount,
    target=abs_paths,
    host_dir=st.none() | abs_paths,
    files=st.lists(config_names, max_size=3).map(tuple),
    reload=st.sampled_from(s.ReloadPolicy),
)
config_contents = st.binary(max_size=200).map(ConfigContent.of)

hook_commands = st.lists(short_text, min_size=1, max_size=3).map(tuple)
host_hooks = st.builds(
    s.Hook,
    command=hook_commands,
    run_in=st.sampled_from(s.HookPlace),
    timeout=st.floats(min_value=0.1, max_value=3600),
)
controller_hooks = st.none() | st.builds(s.ControllerHook, command=hook_commands)
# A blue-green service has only its switch hook and post_rollout (the spec refuses more).
hooks_and_blue_green = st.tuples(
    st.builds(
        s.Hooks,
        pre_update=st.none() | host_hooks,
        post_update=st.none() | host_hooks,
        post_rollout=controller_hooks,
    ),
    st.none(),
) | st.tuples(st.builds(s.Hooks, post_rollout=controller_hooks), blue_greens)
SPEC_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "config": st.none() | config_mounts,
    "name": tokens,
    "image": image_refs(),
    "container": container_settings,
    "health": st.none() | health_checks(),
    "update_order": st.just(s.UpdateOrder.STOP_FIRST),
    "stop_grace_period": st.floats(min_value=0, max_value=600),
}
service_specs = hooks_and_blue_green.flatmap(
    lambda pair: st.builds(
        s.ServiceSpec, hooks=st.just(pair[0]), blue_green=st.just(pair[1]), **SPEC_FIELDS
    )
)

envelope: dict[str, Any] = {"sender": tokens, "sent_at": times, "id": tokens}
command_fields: dict[str, Any] = {
    **envelope,
    "host": host_ids,
    "expires_at": times,
    "key_id": st.none() | st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
    "signature": st.none() | st.binary(min_size=64, max_size=64),
}
reasons = st.builds(m.Reason, code=tokens, text=short_text)
statuses = st.builds(
    m.ServiceStatus,
    name=tokens,
    image=st.none() | image_refs(),
    digest=st.none() | digests,
    container_id=st.none() | tokens,
    started_at=st.none() | times,
    restart_count=st.integers(min_value=0, max_value=1000),
    colour=st.none() | colours,
)
member_names = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)


@st.composite
def app_specs(draw: st.DrawFn) -> AppSpec:
    """An app of one to three members, each depending only on those before it."""
    names = draw(st.lists(member_names, min_size=1, max_size=3, unique=True))
    members = []
    for index, name in enumerate(names):
        before = draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else []
        dependencies = tuple(
            Dependency(member=other, condition=draw(st.sampled_from(Condition))) for other in before
        )
        members.append(Member(name=name, spec=draw(service_specs), depends_on=dependencies))
    volumes = st.builds(NamedVolume, name=tokens, external=st.booleans())
    return AppSpec(
        name=draw(tokens),
        members=tuple(members),
        volumes=tuple(draw(st.lists(volumes, max_size=2))),
        networks=tuple(draw(st.lists(st.builds(NamedNetwork, name=tokens), max_size=2))),
    )


hook_results = st.builds(
    m.HookResult,
    hook=st.sampled_from(m.HookName),
    exit_code=st.none() | st.integers(min_value=-1, max_value=255),
    output=short_text,
    duration=fractions,
)
failure_bundles = st.builds(
    m.FailureBundle,
    reason=reasons,
    exit_code=st.none() | st.integers(min_value=-1, max_value=255),
    last_log_lines=st.lists(short_text, max_size=5).map(tuple),
    probe_results=st.lists(st.builds(m.ProbeResult, at=times, output=short_text), max_size=3).map(
        tuple
    ),
    timings=st.dictionaries(tokens, fractions, max_size=3),
    hooks=st.lists(hook_results, max_size=2).map(tuple),
)
reply_fields: dict[str, Any] = {**envelope, "in_reply_to": st.none() | tokens}

MESSAGE_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "prepare": st.builds(m.PrepareCommand, service=service_specs, **command_fields),
    "apply": st.builds(m.ApplyCommand, service=service_specs, **command_fields),
    "prepare_app": st.builds(m.PrepareAppCommand, app=app_specs(), **command_fields),
    "apply_app": st.builds(m.ApplyAppCommand, app=app_specs(), **command_fields),
    "rollback": st.builds(m.RollbackCommand, service=tokens, **command_fields),
    "remove": st.builds(m.RemoveCommand, service=tokens, **command_fields),
    "stage": st.builds(m.StageCommand, service=service_specs, colour=colours, **command_fields),
    "switch": st.builds(m.SwitchCommand, service=tokens, colour=colours, **command_fields),
    "retire": st.builds(m.RetireCommand, service=tokens, colour=colours, **command_fields),
    "inspect": st.builds(m.InspectCommand, service=tokens, **command_fields),
    "config": st.builds(
        m.ConfigCommand,
        service=tokens,
        name=config_names,
        version=st.integers(min_value=0, max_value=10**6),
        content=st.none() | config_contents,
        check_only=st.booleans(),
        rollout_id=st.none() | tokens,
        **command_fields,
    ),
    "prepare_reply": st.builds(
        m.PrepareReply,
        service=tokens,
        reasons=st.lists(reasons, max_size=4).map(tuple),
        digest=st.none() | digests,
        digests=st.dictionaries(member_names, digests, max_size=3),
        **reply_fields,
    ),
    "operation_reply": st.builds(
        m.OperationReply,
        service=tokens,
        status=statuses,
        failure=st.none() | failure_bundles,
        member_failures=st.dictionaries(tokens, failure_bundles, max_size=2),
        **reply_fields,
    ),
    "inspect_reply": st.builds(m.InspectReply, status=statuses, **reply_fields),
    "error": st.builds(m.ErrorReply, code=tokens, message=short_text, **reply_fields),
    "host_facts": st.builds(
        m.HostFacts,
        host=host_ids,
        labels=st.dictionaries(tokens, short_text, max_size=3),
        agent_version=short_text,
        cpus=st.integers(min_value=0, max_value=1024),
        memory_total=sizes,
        memory_available=sizes,
        disk_total=sizes,
        disk_free=sizes,
        services=st.lists(statuses, max_size=3).map(tuple),
        **envelope,
    ),
    "update_progress": st.builds(
        m.UpdateProgress,
        host=host_ids,
        service=tokens,
        operation_id=tokens,
        detail=short_text,
        progress=st.none() | st.floats(min_value=0, max_value=1),
        image=st.none() | image_refs(),
        **envelope,
    ),
    "config_progress": st.builds(
        m.ConfigProgress,
        host=host_ids,
        service=tokens,
        name=config_names,
        version=st.integers(min_value=0, max_value=10**6),
        sha256=st.none() | digests,
        phase=st.sampled_from(m.ConfigPhase),
        policy=st.sampled_from(s.ReloadPolicy),
        detail=short_text,
        rollout_id=st.none() | tokens,
        failure=st.none() | failure_bundles,
        **envelope,
    ),
    "container_event": st.builds(
        m.ContainerEvent,
        host=host_ids,
        service=st.none() | tokens,
        container=tokens,
        container_id=tokens,
        exit_code=st.none() | st.integers(min_value=-1, max_value=255),
        at=times,
        **envelope,
    ),
    "rollout_event": st.builds(
        m.RolloutEvent,
        rollout_id=tokens,
        service=tokens,
        revision=st.integers(min_value=1, max_value=1000),
        status=tokens,
        reason=short_text,
        image=image_refs(),
        members=st.dictionaries(member_names, image_refs(), max_size=3),
        **envelope,
    ),
    "convergence_event": st.builds(
        m.ConvergenceEvent,
        service=tokens,
        host=host_ids,
        action=st.sampled_from(m.ConvergenceAction),
        revision=st.integers(min_value=1, max_value=1000),
        reason=short_text,
        rollout_id=st.none() | tokens,
        **envelope,
    ),
    "hook_run": st.builds(
        m.HookRun,
        service=tokens,
        host=st.none() | host_ids,
        operation_id=st.none() | tokens,
        rollout_id=st.none() | tokens,
        result=hook_results,
        **envelope,
    ),
    "images_pruned": st.builds(
        m.ImagesPruned,
        host=host_ids,
        service=tokens,
        operation_id=st.none() | tokens,
        removed=st.lists(image_refs(), max_size=3).map(tuple),
        freed_bytes=st.integers(min_value=0, max_value=2**40),
        **envelope,
    ),
    "colour_switch": st.builds(
        m.ColourSwitch,
        service=tokens,
        colour=colours,
        port=ports,
        rollout_id=tokens,
        hosts=st.lists(host_ids, max_size=3).map(tuple),
        **envelope,
    ),
    "metrics": st.builds(
        m.MetricsSample,
        host=host_ids,
        cpu_percent=fractions,
        memory_used=sizes,
        memory_total=sizes,
        disk_used=sizes,
        disk_total=sizes,
        load_1m=fractions,
        containers=st.lists(
            st.builds(
                m.ContainerMetrics,
                service=tokens,
                container_id=tokens,
                cpu_percent=fractions,
                memory_bytes=sizes,
            ),
            max_size=3,
        ).map(tuple),
        **envelope,
    ),
    "log_batch": st.builds(
        m.LogBatch,
        host=host_ids,
        service=tokens,
        container_id=tokens,
        lines=st.lists(
            st.builds(
                m.LogEntry,
                stream=st.sampled_from(["stdout", "stderr"]),
                timestamp=times,
                line=st.text(max_size=200),
            ),
            min_size=1,
            max_size=3,
        ).map(tuple),
        **envelope,
    ),
    "telemetry_dropped": st.builds(
        m.TelemetryDropped,
        host=host_ids,
        messages=st.integers(min_value=1, max_value=10**6),
        log_lines=st.integers(min_value=0, max_value=10**6),
        bytes=sizes,
        first_dropped_at=times,
        last_dropped_at=times,
        **envelope,
    ),
}

any_message = st.one_of(*MESSAGE_STRATEGIES.values())
