"""The message schema is plain JSON Schema 2020-12, and real messages validate against it.

Other languages compile the schema with strict validators: every keyword must be one of
2020-12's vocabularies, every format one 2020-12 defines. The messages validated here
are encoded by the codec from real model instances and decoded by msgpack alone, then
written the way the schema documents: date-times as RFC 3339 strings, bytes as base64.
The keyword and format lists below are copied from the 2020-12 specification, not from
the code under test.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from pydantic import BaseModel

from protocol import models as m
from protocol import spec as s
from protocol.app import AppSpec, Condition, Dependency, Member, NamedNetwork, NamedVolume
from protocol.codec import encode
from protocol.config_files import ConfigContent
from protocol.models import MESSAGE_ADAPTER, MESSAGE_KINDS
from protocol.schema_file import SCHEMA_PATH
from protocol.signing import CommandSigner, generate_key
from tests.support.strategies import MESSAGE_STRATEGIES

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# JSON Schema 2020-12, Core section 8 and Validation sections 6-9, by where the value of
# each keyword holds subschemas (the walk descends into those) or plain data.
SUBSCHEMA_MAPS = frozenset({"$defs", "properties", "patternProperties", "dependentSchemas"})
SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
SUBSCHEMAS = frozenset(
    {
        "items",
        "contains",
        "additionalProperties",
        "propertyNames",
        "if",
        "then",
        "else",
        "not",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
DATA_KEYWORDS = frozenset(
    {
        # core
        "$schema",
        "$id",
        "$ref",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$vocabulary",
        "$comment",
        # validation
        "type",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxContains",
        "minContains",
        "maxProperties",
        "minProperties",
        "required",
        "dependentRequired",
        # meta-data
        "title",
        "description",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "examples",
        # format annotation, content
        "format",
        "contentEncoding",
        "contentMediaType",
    }
)
STANDARD_FORMATS = frozenset(
    {
        "date-time",
        "date",
        "time",
        "duration",
        "email",
        "idn-email",
        "hostname",
        "idn-hostname",
        "ipv4",
        "ipv6",
        "uri",
        "uri-reference",
        "iri",
        "iri-reference",
        "uuid",
        "uri-template",
        "json-pointer",
        "relative-json-pointer",
        "regex",
    }
)

NOW = datetime(2026, 11, 24, 12, 0, 0, 250_000, tzinfo=UTC)
SIGNER = CommandSigner(generate_key()[0])


def committed_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def validator() -> Draft202012Validator:
    return Draft202012Validator(committed_schema(), format_checker=FormatChecker())


# ---- walking a schema the way a validator reads it ----


def keywords(schema: object, pointer: str = "#") -> Iterator[tuple[str, str, object]]:
    """(JSON pointer, keyword, value) of every keyword in ``schema`` and its subschemas."""
    if isinstance(schema, bool):
        return
    assert isinstance(schema, dict), f"{pointer} is not a schema: {schema!r}"
    for keyword, value in schema.items():
        yield pointer, keyword, value
        if keyword in SUBSCHEMA_MAPS:
            for name, subschema in value.items():
                yield from keywords(subschema, f"{pointer}/{keyword}/{name}")
        elif keyword in SUBSCHEMA_LISTS:
            for index, subschema in enumerate(value):
                yield from keywords(subschema, f"{pointer}/{keyword}/{index}")
        elif keyword in SUBSCHEMAS:
            yield from keywords(value, f"{pointer}/{keyword}")


def foreign_keywords(schema: dict[str, Any]) -> list[str]:
    known = SUBSCHEMA_MAPS | SUBSCHEMA_LISTS | SUBSCHEMAS | DATA_KEYWORDS
    return [
        f"{pointer}/{keyword}" for pointer, keyword, _ in keywords(schema) if keyword not in known
    ]


def formats(schema: dict[str, Any]) -> set[str]:
    return {str(value) for _, keyword, value in keywords(schema) if keyword == "format"}


# ---- real messages, as a subscriber in another language would see them ----


def host_status(image: str, container_id: str) -> m.ServiceStatus:
    return m.ServiceStatus(
        name="web",
        image=image,
        digest="sha256:" + "4e" * 32,
        container_id=container_id,
        state=m.ContainerState.RUNNING,
        health=m.Health.HEALTHY,
        started_at=NOW - timedelta(minutes=3),
        restart_count=1,
        colour="blue",
    )


def shop_app() -> AppSpec:
    """The issue's app: web waits for a healthy cache and a completed migration."""
    web = web_spec().model_copy(update={"name": "shop-web"})
    cache = s.ServiceSpec(
        name="shop-cache",
        image="registry.example.com/shop/cache:7.2@sha256:" + "c" * 64,
        container=s.ContainerSettings(
            healthcheck=s.ContainerHealthcheck(test=("CMD-SHELL", "redis-cli ping")),
            networks=(s.NetworkAttachment(name="shop_default", aliases=("cache",)),),
        ),
        health=s.HealthCheck(probe=s.DockerHealthProbe()),
    )
    migrate = s.ServiceSpec(
        name="shop-migrate",
        image="registry.example.com/shop/web:2.4.1",
        container=s.ContainerSettings(
            command=("migrate",), restart_policy=s.RestartPolicy(name="no")
        ),
    )
    return AppSpec(
        name="shop",
        members=(
            Member(name="cache", spec=cache),
            Member(name="migrate", spec=migrate),
            Member(
                name="web",
                spec=web,
                depends_on=(
                    Dependency(member="cache", condition=Condition.HEALTHY, restart=True),
                    Dependency(member="migrate", condition=Condition.COMPLETED),
                ),
            ),
        ),
        volumes=(NamedVolume(name="shop_data"),),
        networks=(NamedNetwork(name="shop_default"),),
    )


def web_spec() -> s.ServiceSpec:
    return s.ServiceSpec(
        name="web",
        image="registry.example.com/shop/web:2.4.1",
        container=s.ContainerSettings(
            env={"LOG_LEVEL": "info", "PORT": "8080"},
            volumes=(
                s.VolumeMount(source="web-data", target="/var/lib/web"),
                s.VolumeMount(kind="bind", source="/etc/ssl", target="/etc/ssl", read_only=True),
            ),
            ports=(s.PortMapping(container_port=8080),),
            restart_policy=s.RestartPolicy(name="on-failure", max_retries=5),
            resources=s.Resources(memory_bytes=512 * 1024 * 1024, cpus=1.5, pids_limit=256),
            user="1000:1000",
            command=("web", "--serve"),
            labels={"team": "shop"},
            cap_drop=("ALL",),
            cap_add=("NET_BIND_SERVICE",),
        ),
        health=s.HealthCheck(
            probe=s.HttpProbe(port=8080, path="/healthz", expect_status=(200, 204)),
            initial_delay=1.0,
            min_healthy_time=5.0,
            healthy_deadline=60.0,
        ),
        stop_grace_period=15.0,
        blue_green=s.BlueGreen(
            port=8080, alternate_port=8081, switch_hook=("nginx", "-s", "reload")
        ),
        config=s.ConfigMount(files=("app.conf",), reload=s.ReloadPolicy.SIGNAL),
    )


def failure_bundle() -> m.FailureBundle:
    return m.FailureBundle(
        reason=m.Reason(code="unhealthy", text="probe GET :8080/healthz failed 3 times"),
        exit_code=137,
        oom_killed=True,
        last_log_lines=("listening on :8080", "panic: out of memory"),
        probe_results=(
            m.ProbeResult(
                at=NOW - timedelta(seconds=2), ok=False, output="503 Service Unavailable"
            ),
            m.ProbeResult(at=NOW - timedelta(seconds=1), ok=False, output="connection refused"),
        ),
        timings={"pull": 4.2, "start": 0.8, "probe": 12.5},
    )


def captured_messages() -> list[m.AnyMessage]:
    """One or more real messages of every kind, as controller and agents send them."""
    expires = NOW + timedelta(seconds=30)
    command: dict[str, Any] = {"sender": "controller", "host": "web-1", "expires_at": expires}
    config = ConfigContent.of(b"listen 8080;\nworkers 4;\n\x00\xff binary tail")
    apply = SIGNER.sign(m.ApplyCommand(service=web_spec(), rollout_id="r-42", **command))
    agent: dict[str, Any] = {"sender": "web-1", "sent_at": NOW}
    return [
        SIGNER.sign(m.PrepareCommand(service=web_spec(), rollout_id="r-42", **command)),
        apply,
        SIGNER.sign(m.PrepareAppCommand(app=shop_app(), rollout_id="shop-r2", **command)),
        SIGNER.sign(m.ApplyAppCommand(app=shop_app(), rollout_id="shop-r2", **command)),
        SIGNER.sign(m.RollbackCommand(service="web", force=True, rollout_id="r-42", **command)),
        SIGNER.sign(m.RemoveCommand(service="web", rollout_id="web-delete-3", **command)),
        SIGNER.sign(m.StageCommand(service=web_spec(), colour="green", **command)),
        SIGNER.sign(m.SwitchCommand(service="web", colour="green", remove_other=True, **command)),
        SIGNER.sign(m.RetireCommand(service="web", colour="blue", **command)),
        SIGNER.sign(
            m.ConfigCommand(service="web", name="app.conf", version=3, content=config, **command)
        ),
        m.ConfigCommand(
            service="web", name="app.conf", version=0, content=None, check_only=True, **command
        ),
        m.InspectCommand(service="web", **command),
        m.PrepareReply(
            in_reply_to=apply.id,
            service="web",
            ready=False,
            reasons=(m.Reason(code="disk_full", text="2 GiB free, image needs 3 GiB"),),
            digest="sha256:" + "ab" * 32,
            **agent,
        ),
        m.OperationReply(
            in_reply_to=apply.id,
            service="web",
            outcome=m.OperationOutcome.ROLLED_BACK,
            status=host_status("registry.example.com/shop/web:2.4.0", "c0ffee"),
            failure=failure_bundle(),
            reasons=(m.Reason(code="rolled_back", text="new version unhealthy"),),
            **agent,
        ),
        m.OperationReply(
            in_reply_to=apply.id,
            service="web",
            outcome=m.OperationOutcome.DONE,
            status=host_status("registry.example.com/shop/web:2.4.1", "beef01"),
            **agent,
        ),
        m.InspectReply(in_reply_to=apply.id, status=host_status("web:2.4.1", "beef01"), **agent),
        m.ErrorReply(in_reply_to=None, code="malformed", message="not a msgpack message", **agent),
        m.HostFacts(
            host="web-1",
            labels={"zone": "eu-1", "tier": "front"},
            agent_version="0.1.0",
            docker_version="27.3.1",
            cpus=8,
            memory_total=16 * 2**30,
            memory_available=9 * 2**30,
            disk_total=500 * 2**30,
            disk_free=120 * 2**30,
            services=(host_status("web:2.4.1", "beef01"),),
            **agent,
        ),
        m.UpdateProgress(
            host="web-1",
            service="web",
            operation_id=apply.id,
            rollout_id="r-42",
            phase=m.UpdatePhase.PULLING,
            detail="layer 3/7",
            progress=0.42,
            image="registry.example.com/shop/web:2.4.1",
            **agent,
        ),
        m.ConfigProgress(
            host="web-1",
            service="web",
            name="app.conf",
            version=3,
            sha256=config.sha256,
            phase=m.ConfigPhase.ROLLED_BACK,
            policy=s.ReloadPolicy.SIGNAL,
            detail="verification failed",
            rollout_id="c-7",
            failure=failure_bundle(),
            **agent,
        ),
        m.ContainerEvent(
            host="web-1",
            service="web",
            container="web",
            container_id="beef01" * 10,
            action=m.ContainerAction.DIE,
            exit_code=137,
            at=NOW,
            **agent,
        ),
        m.RolloutEvent(
            sender="controller",
            rollout_id="r-42",
            service="web",
            revision=7,
            status="rolling_back",
            reason="web-3 failed its health check",
            image="registry.example.com/shop/web:2.4.1",
            hosts_done=2,
            hosts_total=5,
        ),
        m.ConvergenceEvent(
            sender="controller",
            service="web",
            host="edge-7",
            action=m.ConvergenceAction.DRIFT_REPAIRED,
            revision=7,
            reason="container removed by hand",
            rollout_id="web-r7-converge-20261129221500000000",
        ),
        m.HookRun(
            sender="edge-7",
            service="web",
            host="edge-7",
            operation_id="0123456789abcdef0123456789abcdef",
            rollout_id="web-r7-20261129221500000000",
            result=m.HookResult(
                hook=m.HookName.PRE_UPDATE, ok=False, exit_code=3, output="drain refused"
            ),
        ),
        m.ImagesPruned(
            sender="edge-7",
            host="edge-7",
            service="web",
            operation_id="0123456789abcdef0123456789abcdef",
            removed=("127.0.0.1:5000/demo/web@sha256:" + "a" * 64, "registry.local/web:1.0.0"),
            freed_bytes=14_680_064,
        ),
        m.ColourSwitch(
            sender="controller",
            service="web",
            colour="green",
            port=8081,
            rollout_id="r-43",
            hosts=("web-1", "web-2"),
        ),
        m.MetricsSample(
            host="web-1",
            cpu_percent=37.5,
            memory_used=6 * 2**30,
            memory_total=16 * 2**30,
            disk_used=380 * 2**30,
            disk_total=500 * 2**30,
            load_1m=1.25,
            net_bytes_sent=123_456_789,
            net_bytes_recv=987_654_321,
            open_files=812,
            containers=(
                m.ContainerMetrics(
                    service="web",
                    container_id="beef01",
                    image="registry.example.com/shop/web:2.4.1",
                    cpu_percent=150.0,
                    memory_bytes=300 * 2**20,
                    memory_limit_bytes=512 * 2**20,
                    restart_count=1,
                    health=m.Health.HEALTHY,
                ),
            ),
            **agent,
        ),
        m.LogBatch(
            host="web-1",
            service="web",
            container_id="beef01",
            lines=(
                m.LogEntry("stdout", NOW - timedelta(milliseconds=5), "GET /healthz 200 0.4ms"),
                m.LogEntry("stderr", NOW, "warning: slow query (1.2s) «orders» ✓"),
            ),
            **agent,
        ),
        m.TelemetryDropped(
            host="web-1",
            messages=120,
            log_lines=4_000,
            bytes=512_000,
            first_dropped_at=NOW - timedelta(minutes=5),
            last_dropped_at=NOW,
            **agent,
        ),
    ]


def as_json_value(value: object) -> object:
    """A msgpack-decoded value as the schema documents it in JSON form."""
    if isinstance(value, dict):
        return {key: as_json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json_value(item) for item in value]
    if isinstance(value, datetime):
        assert value.tzinfo is not None, "msgpack timestamps decode as aware date-times"
        return value.isoformat()  # RFC 3339: date, "T", time, numeric offset
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def on_the_wire(message: BaseModel) -> dict[str, Any]:
    """Encoded by the codec, decoded by msgpack alone (no pydantic), then as JSON."""
    decoded = msgpack.unpackb(encode(message), raw=False, timestamp=3)
    assert isinstance(decoded, dict)
    converted = as_json_value(decoded)
    assert isinstance(converted, dict)
    return converted


def kind_of(schema_choice: dict[str, Any], schema: dict[str, Any]) -> str:
    model = schema["$defs"][schema_choice["$ref"].removeprefix("#/$defs/")]
    kind: str = model["properties"]["kind"]["const"]
    return kind


def errors_of_its_own_model(
    instance: dict[str, Any], kind: str | None = None
) -> list[ValidationError]:
    """Why ``instance`` fails the model of ``kind`` (default: the kind it names). The
    other models of the top ``oneOf`` refuse it for its kind alone."""
    schema = committed_schema()
    errors = list(validator().iter_errors(instance))
    assert [error.validator for error in errors] == ["oneOf"]
    kinds = [kind_of(choice, schema) for choice in schema["oneOf"]]
    branch = kinds.index(kind or instance["kind"])
    return [error for error in errors[0].context if error.relative_schema_path[0] == branch]


def named(errors: list[ValidationError]) -> list[tuple[object, list[str | int]]]:
    return [(error.validator, list(error.absolute_path)) for error in errors]


# ---- the schema itself ----


def test_the_schema_declares_2020_12_and_its_meta_schema_accepts_it() -> None:
    schema = committed_schema()
    assert schema["$schema"] == DRAFT_2020_12
    assert validators.validator_for(schema) is Draft202012Validator
    # With the format checker, every `pattern` is also checked to be a regular expression.
    Draft202012Validator.check_schema(schema, format_checker=FormatChecker())


def test_the_schema_uses_only_keywords_of_the_2020_12_vocabularies() -> None:
    assert foreign_keywords(committed_schema()) == []


def test_the_keyword_walk_finds_pydantics_openapi_discriminator_and_non_standard_formats() -> None:
    # pydantic's own output is what the schema file must not be: the walk has to see it.
    stock = MESSAGE_ADAPTER.json_schema(mode="validation")
    assert "#/discriminator" in foreign_keywords(stock)
    assert "#/$defs/HealthCheck/properties/probe/discriminator" in foreign_keywords(stock)
    assert "binary" in formats(stock)


def test_the_schema_uses_only_formats_that_2020_12_defines() -> None:
    used = formats(committed_schema())
    assert used <= STANDARD_FORMATS, f"non-standard formats: {sorted(used - STANDARD_FORMATS)}"
    assert "date-time" in used


def test_bytes_are_declared_as_standard_base64_text_of_their_encoded_length() -> None:
    schema = committed_schema()
    encodings = [
        (pointer, value)
        for pointer, keyword, value in keywords(schema)
        if keyword == "contentEncoding"
    ]
    assert {value for _, value in encodings} == {"base64"}
    signature = schema["$defs"]["ApplyCommand"]["properties"]["signature"]["anyOf"][0]
    assert signature["contentEncoding"] == "base64"
    assert signature["maxLength"] == 88, "an Ed25519 signature (64 bytes) is 88 base64 characters"
    data = schema["$defs"]["ConfigContent"]["properties"]["data"]
    assert data["maxLength"] == 349_528, "256 KiB of content is 349,528 base64 characters"


def test_every_reference_points_into_the_files_own_defs() -> None:
    schema = committed_schema()
    references = [value for _, keyword, value in keywords(schema) if keyword == "$ref"]
    assert references
    for reference in references:
        assert isinstance(reference, str)
        assert reference.startswith("#/$defs/"), reference
        assert reference.removeprefix("#/$defs/") in schema["$defs"], reference


def test_every_message_model_requires_its_kind_and_schema_version() -> None:
    # The codec reads both before it picks a model, so neither may be left out.
    schema = committed_schema()
    for choice in schema["oneOf"]:
        model = schema["$defs"][choice["$ref"].removeprefix("#/$defs/")]
        assert {"kind", "schema_version"} <= set(model["required"]), choice["$ref"]


# ---- real messages against it ----


def test_captured_messages_of_every_kind_validate_with_format_checking() -> None:
    checker = validator()
    covered: Counter[str] = Counter()
    for message in captured_messages():
        wire = on_the_wire(message)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in checker.iter_errors(wire)]
        assert errors == [], f"{wire['kind']} does not validate: {errors}"
        covered[wire["kind"]] += 1
    missing = MESSAGE_KINDS - set(covered)
    assert not missing, f"no captured example of {sorted(missing)}: add one to captured_messages()"


def test_captured_messages_carry_bytes_and_timestamps_through_msgpack_natively() -> None:
    # The conversion above must have something to convert: bin and timestamps on the wire.
    apply = next(msg for msg in captured_messages() if isinstance(msg, m.ApplyCommand))
    raw = msgpack.unpackb(encode(apply), raw=False, timestamp=3)
    assert isinstance(raw["signature"], bytes)
    assert len(raw["signature"]) == 64
    assert isinstance(raw["sent_at"], datetime)
    wire = on_the_wire(apply)
    assert base64.b64decode(wire["signature"], validate=True) == raw["signature"]
    assert datetime.fromisoformat(wire["expires_at"]) == NOW + timedelta(seconds=30)


@pytest.mark.parametrize("kind", sorted(MESSAGE_KINDS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_valid_message_of_each_kind_validates_against_the_schema(
    kind: str, data: st.DataObject
) -> None:
    wire = on_the_wire(data.draw(MESSAGE_STRATEGIES[kind]))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(wire)]
    assert errors == []


# ---- and what it refuses ----


def inspect_command_on_the_wire() -> dict[str, Any]:
    command = m.InspectCommand(
        sender="controller",
        sent_at=NOW,
        host="web-1",
        service="web",
        expires_at=NOW + timedelta(seconds=30),
    )
    return on_the_wire(command)


def test_an_unknown_kind_matches_none_of_the_message_schemas() -> None:
    errors = list(validator().iter_errors({**inspect_command_on_the_wire(), "kind": "reboot"}))
    assert named(errors) == [("oneOf", [])]
    assert errors[0].message.endswith("is not valid under any of the given schemas")
    # Every model refuses it for its kind, InspectCommand for nothing else.
    kind_errors = [error for error in errors[0].context if error.validator == "const"]
    assert len(kind_errors) == len(MESSAGE_KINDS)
    assert {tuple(error.absolute_path) for error in kind_errors} == {("kind",)}


def test_a_message_without_a_kind_is_refused_though_its_fields_fit_one_model() -> None:
    wire = inspect_command_on_the_wire()
    del wire["kind"]
    errors = errors_of_its_own_model(wire, kind="inspect")
    assert named(errors) == [("required", [])]
    assert errors[0].message == "'kind' is a required property"


def test_a_message_without_a_schema_version_is_refused() -> None:
    wire = inspect_command_on_the_wire()
    del wire["schema_version"]
    errors = errors_of_its_own_model(wire)
    assert named(errors) == [("required", [])]
    assert errors[0].message == "'schema_version' is a required property"


def test_a_field_of_the_wrong_type_is_named_as_a_type_error() -> None:
    facts = next(msg for msg in captured_messages() if isinstance(msg, m.HostFacts))
    errors = errors_of_its_own_model({**on_the_wire(facts), "cpus": "8"})
    assert named(errors) == [("type", ["cpus"])]
    assert errors[0].message == "'8' is not of type 'integer'"


@pytest.mark.parametrize(
    "sent_at",
    ["2026-11-24T12:00:00", "2026-11-24 12:00:00+00:00", "yesterday", "2026-11-31T12:00:00Z"],
)
def test_a_timestamp_that_is_not_rfc_3339_fails_the_date_time_format(sent_at: str) -> None:
    errors = errors_of_its_own_model({**inspect_command_on_the_wire(), "sent_at": sent_at})
    assert named(errors) == [("format", ["sent_at"])]
    assert errors[0].message == f"{sent_at!r} is not a 'date-time'"


@pytest.mark.parametrize(
    "signature",  # each as long as the base64 of 64 bytes, so only its characters are wrong
    ["not base64! " * 7 + "abcd", "A" * 80 + "AAAA=AAA", "-_" * 44],
)
def test_a_signature_that_is_not_standard_base64_fails_its_pattern(signature: str) -> None:
    apply = next(msg for msg in captured_messages() if isinstance(msg, m.ApplyCommand))
    errors = errors_of_its_own_model({**on_the_wire(apply), "signature": signature})
    assert named(errors) == [("anyOf", ["signature"])]
    # Of the two choices (base64 text, or null), the text fails only its pattern.
    assert sorted(named(errors[0].context)) == [("pattern", ["signature"]), ("type", ["signature"])]
    pattern = next(error for error in errors[0].context if error.validator == "pattern")
    assert pattern.message.startswith(f"{signature!r} does not match")
