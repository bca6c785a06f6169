"""The fleet registry is the one truth: its topology is sound, the contracts agree with it,
service code stays inside it, and every generated file is what the generator writes."""

from __future__ import annotations

import ast
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from quantum.bus.runner import Delivered, dead_letter_fields
from quantum.bus.streams import PREFIX, StreamSpec
from quantum.config import ENV_PREFIX, FleetSettings
from quantum.contracts import streams as stream_catalogue
from quantum.contracts.events import EVENT_TYPES
from quantum.contracts.routing import DEAD_LETTER_FIELDS, DEAD_LETTER_TYPE, STREAM_EVENTS
from quantum.contracts.streams import CATALOGUE, DLQ
from quantum.registry import generate
from quantum.registry.fleet import SERVICES, ServiceSpec, consumer_groups, producers

ROOT = generate.ROOT


# --- generated files --------------------------------------------------------------------


def test_committed_files_equal_the_generator_output() -> None:
    rendered = generate.render()
    differing = [
        path
        for path, content in rendered.items()
        if not (ROOT / path).is_file() or (ROOT / path).read_text(encoding="utf-8") != content
    ]
    assert differing == [], (
        f"generated files differ from the registry: {differing}; "
        "run `python -m quantum.registry.generate`"
    )
    assert generate.check() == []


def test_rendering_is_deterministic() -> None:
    assert generate.render() == generate.render()


def test_write_then_check_in_a_fresh_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = generate.write(tmp_path)
    assert sorted(written) == sorted(generate.render())
    assert generate.check(tmp_path) == []
    assert generate.write(tmp_path) == []  # nothing differs: nothing is rewritten

    unit = tmp_path / "deploy/systemd/quantum-execution.service"
    unit.write_text(unit.read_text().replace("MemoryMax=", "MemoryMax=9"))
    stale = tmp_path / "deploy/systemd/quantum-retired.service"
    stale.write_text("[Service]\n")
    stale_env = tmp_path / "etc/quantum/retired.env.example"
    stale_env.write_text("")
    operator_env = tmp_path / "etc/quantum/execution.env"  # a host's real file: not ours
    operator_env.write_text("QT_EXCHANGE=paper\n")

    expected = [
        "deploy/systemd/quantum-execution.service",
        "deploy/systemd/quantum-retired.service",
        "etc/quantum/retired.env.example",
    ]
    assert sorted(generate.check(tmp_path)) == expected
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    output = capsys.readouterr().out
    assert all(f"differs: {path}" in output for path in expected)

    assert sorted(generate.write(tmp_path)) == expected
    assert not stale.exists() and not stale_env.exists()
    assert operator_env.read_text() == "QT_EXCHANGE=paper\n"
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0


def test_launcher_table_has_the_supervisors_shape() -> None:
    table = json.loads((ROOT / generate.LAUNCHER).read_text())
    assert list(table) == ["services"]
    assert [entry["name"] for entry in table["services"]] == [spec.name for spec in SERVICES]
    for entry, spec in zip(table["services"], SERVICES, strict=True):
        assert set(entry) == {
            "name", "module", "env_file", "port", "required", "consumes", "produces"
        }
        assert entry["module"] == spec.module and entry["port"] == spec.port
        assert isinstance(entry["required"], bool) and isinstance(entry["env_file"], str)
        for item in entry["consumes"]:
            assert set(item) == {"stream", "group"} and item["group"] == spec.name
            assert item["stream"] in CATALOGUE
        assert all(isinstance(name, str) and name in CATALOGUE for name in entry["produces"])


def test_a_second_producer_is_refused() -> None:
    market, features = SERVICES[0], SERVICES[1]
    rogue = replace(features, produces=(*features.produces, market.produces[0]))
    with pytest.raises(generate.GenerationError, match="two producers"):
        generate.render((market, rogue))


# --- topology -----------------------------------------------------------------------------


def _stream_names(specs: tuple[StreamSpec, ...]) -> list[str]:
    return [spec.name for spec in specs]


def test_service_names_modules_ports_and_units_are_unique() -> None:
    for attribute in ("name", "module", "port", "unit"):
        values = Counter(getattr(spec, attribute) for spec in SERVICES)
        assert [v for v, n in values.items() if n > 1] == [], attribute
    assert all(1024 < spec.port < 65536 for spec in SERVICES)


def test_every_stream_has_exactly_one_producer() -> None:
    counts = Counter(name for spec in SERVICES for name in _stream_names(spec.produces))
    assert {name: n for name, n in counts.items() if n != 1} == {}
    assert set(producers()) == set(counts)
    # The dead-letter stream is written by the runner of every consumer, never declared.
    assert DLQ.name not in counts


def test_every_consumed_stream_has_a_producer() -> None:
    produced = producers()
    orphans = {
        (spec.name, stream) for spec in SERVICES for stream in _stream_names(spec.consumes)
        if stream not in produced
    }
    assert orphans == set()


def test_services_use_only_catalogue_streams() -> None:
    for spec in SERVICES:
        for stream in (*spec.consumes, *spec.produces):
            assert CATALOGUE.get(stream.name) == stream, f"{spec.name}: {stream.name}"


def test_a_service_consumes_a_stream_once_and_never_its_own_output() -> None:
    for spec in SERVICES:
        consumed = _stream_names(spec.consumes)
        assert len(consumed) == len(set(consumed)), spec.name
        assert not set(consumed) & set(_stream_names(spec.produces)), spec.name
    for stream, groups in consumer_groups().items():
        assert len(groups) == len(set(groups)), stream


def test_every_state_key_has_one_owner() -> None:
    owners = Counter(key for spec in SERVICES for key in spec.state_keys)
    assert {key: n for key, n in owners.items() if n > 1} == {}


# --- routing of event types -----------------------------------------------------------------


def test_every_event_type_travels_on_exactly_one_stream() -> None:
    routed = Counter(event_type for types in STREAM_EVENTS.values() for event_type in types)
    for event_type, _ in EVENT_TYPES:
        assert routed[event_type] == 1, event_type
    unknown = set(routed) - {event_type for event_type, _ in EVENT_TYPES} - {DEAD_LETTER_TYPE}
    assert unknown == set()


def test_routed_streams_are_catalogued_and_every_produced_stream_is_routed() -> None:
    assert set(STREAM_EVENTS) <= set(CATALOGUE)
    assert set(producers()) <= set(STREAM_EVENTS)
    assert STREAM_EVENTS[DLQ.name] == (DEAD_LETTER_TYPE,)


def test_documented_dead_letter_fields_are_what_the_runner_writes() -> None:
    item = Delivered(CATALOGUE["features"].key, "1-0", {b"type": b"features.computed"})
    written = dead_letter_fields(item, "ai-engine", "bad payload")
    assert written["type"] == DEAD_LETTER_TYPE
    assert set(written) == {"type", *DEAD_LETTER_FIELDS}


def test_stream_docs_name_every_event_type_and_field() -> None:
    doc = (ROOT / generate.STREAMS_DOC).read_text()
    for event_type, model in EVENT_TYPES:
        assert f"### `{event_type}`" in doc
        assert all(f"| `{field}` |" in doc for field in model.model_fields)
    assert all(f"| `{field}` |" in doc for field in DEAD_LETTER_FIELDS)


# --- settings and env files -----------------------------------------------------------------


def test_settings_classes_are_strict_fleet_settings() -> None:
    for spec in SERVICES:
        cls = generate.settings_class(spec)
        assert issubclass(cls, FleetSettings)
        assert cls.model_config.get("extra") == "forbid", spec.settings
        assert cls.model_config.get("frozen") is True, spec.settings
        assert cls.model_config.get("env_prefix") == ENV_PREFIX, spec.settings


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``QT_*`` variables from the developer's shell leak into a settings load."""
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    yield


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_env_examples_load_back_to_the_defaults(spec: ServiceSpec) -> None:
    """The example files parse, hold only known keys and reproduce every default."""
    cls = generate.settings_class(spec)
    files = (
        ROOT / generate.COMMON_ENV_EXAMPLE,
        ROOT / generate.ENV_EXAMPLE_DIR / f"{spec.env_file}.example",
    )
    loaded = cls(_env_file=files)  # type: ignore[call-arg]
    assert loaded == cls()
    text = files[1].read_text()
    for name, field in cls.model_fields.items():
        if name in FleetSettings.model_fields:
            continue
        assert f"{ENV_PREFIX}{name.upper()}=" in text, name
        if generate._is_secret(field.annotation):
            line = next(li for li in text.splitlines() if f"{ENV_PREFIX}{name.upper()}=" in li)
            assert line.endswith("="), f"a secret has a value in {files[1].name}"


def test_attribute_docs_parser() -> None:
    class Example:
        """Attributes:
        alpha: the first.
        beta / gamma: described together, over
            two lines.
        """

    assert generate.attribute_docs(Example) == {
        "alpha": "the first.",
        "beta": "described together, over two lines.",
        "gamma": "described together, over two lines.",
    }


def test_an_undocumented_setting_stops_generation() -> None:
    class Undocumented(FleetSettings):
        """Attributes:
        documented: yes.
        """

        documented: int = 1
        forgotten: str = "x"
        api_token: SecretStr | None = None

    with pytest.raises(generate.GenerationError, match="forgotten has no description"):
        generate.settings_of(Undocumented, inherited=False)


# --- service code stays inside its registry entry -------------------------------------------
#
# Approach: parse every ``.py`` file of a service package with ``ast`` (nothing is imported or
# run, so half-written services are fine) and collect the streams it refers to:
#   * names bound by imports, tracked through aliases: ``from quantum.contracts.streams import
#     MARKET_TICK as TICK``, ``from quantum.contracts import streams as s`` then ``s.FEATURES``,
#     ``import quantum.contracts.streams`` then ``quantum.contracts.streams.FEATURES``; the
#     same for ``quantum.bus.streams`` (where ``DLQ`` lives);
#   * by-name lookups with a literal: ``spec_for("apply.plan")``, ``CATALOGUE["features"]``;
#   * a hard-coded key literal such as ``"quantum:stream:features"``;
#   * a star import from a streams module, which hides what is used: always a violation.
# The allowed set is the entry's consumes + produces, plus ``dlq`` for a consumer (its runner
# dead-letters). Referring to the registry entry itself (``service(name).consumes``) is
# dynamic and always allowed. Mentions in comments or docstrings are not references.

STREAM_MODULES = ("quantum.contracts.streams", "quantum.bus.streams")
CONSTANTS: dict[str, str] = {
    name: value.name
    for module in (stream_catalogue,)
    for name, value in vars(module).items()
    if isinstance(value, StreamSpec)
}
LOOKUPS = {"spec_for", "CATALOGUE"}


@dataclass(frozen=True)
class StreamReference:
    stream: str  # catalogue name, or "*" for a star import
    line: int
    how: str


def _qualified_name(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``s.FEATURES`` → ``quantum.contracts.streams.FEATURES`` using the import aliases."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _constant_of(qualified: str | None) -> str | None:
    for module in STREAM_MODULES:
        if qualified and qualified.startswith(module + "."):
            name = qualified[len(module) + 1 :].split(".")[0]
            return CONSTANTS.get(name)
    return None


def stream_references(source: str) -> list[StreamReference]:
    """Every stream a module's source refers to (see the approach above)."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found: list[StreamReference] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name == "*" and node.module in STREAM_MODULES:
                    found.append(StreamReference("*", node.lineno, "star import"))
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        found += _references_in(node, aliases)
    return found


def _references_in(node: ast.AST, aliases: dict[str, str]) -> list[StreamReference]:
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.ImportFrom) and node.module in STREAM_MODULES:
        return [
            StreamReference(CONSTANTS[alias.name], line, f"import {alias.name}")
            for alias in node.names
            if alias.name in CONSTANTS
        ]
    if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
        qualified = _qualified_name(node, aliases)
        stream = _constant_of(qualified)
        return [StreamReference(stream, line, str(qualified))] if stream else []
    if isinstance(node, (ast.Call, ast.Subscript)):
        target = node.func if isinstance(node, ast.Call) else node.value
        argument = node.args[0] if isinstance(node, ast.Call) and node.args else None
        if isinstance(node, ast.Subscript):
            argument = node.slice
        qualified = _qualified_name(target, aliases) or ""
        if qualified.split(".")[-1] in LOOKUPS and isinstance(argument, ast.Constant):
            if isinstance(argument.value, str):
                name = argument.value.removeprefix(PREFIX)
                return [StreamReference(name, line, f"lookup {argument.value!r}")]
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value.startswith(PREFIX) and node.value.removeprefix(PREFIX) in CATALOGUE:
            return [StreamReference(node.value.removeprefix(PREFIX), line, "key literal")]
    return []


def violations(spec: ServiceSpec, source: str, filename: str = "<source>") -> list[str]:
    allowed = (set(_stream_names(spec.consumes)) | set(_stream_names(spec.produces))
               | set(_stream_names(spec.inspects)))
    if spec.consumes:
        allowed.add(DLQ.name)
    return [
        f"{filename}:{ref.line}: {spec.name} refers to {ref.stream} ({ref.how}), "
        f"not declared in its registry entry"
        for ref in stream_references(source)
        if ref.stream not in allowed
    ]


def _package_dir(spec: ServiceSpec) -> Path:
    return ROOT.joinpath(*spec.module.split("."))


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_service_code_refers_only_to_declared_streams(spec: ServiceSpec) -> None:
    package = _package_dir(spec)
    assert package.is_dir(), f"{spec.module} has no package at {package}"
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        found += violations(spec, path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


def test_the_scan_catches_every_kind_of_reference() -> None:
    spec = ServiceSpec(
        name="probe",
        module="services.probe",
        settings="services.probe.config:Settings",
        description="a synthetic service for the scan",
        consumes=(stream_catalogue.FEATURES,),
        produces=(stream_catalogue.TRADE_INTENT,),
    )
    source = '''
"""Mentions quantum:stream:risk.events in a docstring: not a reference."""
import quantum.contracts.streams
from quantum.contracts import streams as s
from quantum.contracts.streams import FEATURES, MARKET_TICK as TICK, spec_for, CATALOGUE
from quantum.bus.streams import DLQ

def handle(out):
    out.emit(s.TRADE_INTENT, None)          # declared
    out.emit(s.APPLY_PLAN, None)            # violation
    quantum.contracts.streams.RISK_DECISION  # violation
    spec_for("features")                    # declared
    spec_for("quantum:stream:trade.closed")  # violation
    CATALOGUE["portfolio.state"]            # violation
    client.xadd("quantum:stream:harvest.intent", {})  # violation
    return FEATURES, DLQ
'''
    found = violations(spec, source)
    flagged = sorted({line.split(" refers to ")[1].split(" ")[0] for line in found})
    assert flagged == [
        "apply.plan", "harvest.intent", "market.tick", "portfolio.state", "risk.decision",
        "trade.closed",
    ]
    assert violations(spec, "from quantum.contracts.streams import *\n") != []
    clean = "from quantum.contracts.streams import FEATURES, TRADE_INTENT\nx = FEATURES\n"
    assert violations(spec, clean) == []


def test_tests_mirror_the_packages_and_services() -> None:
    """``tests/unit/<package>/`` and ``tests/integration/<service or package>/``: a test is
    found where the code it tests lives."""
    root = Path(__file__).resolve().parents[3]
    homes = {p.name for p in (root / "libs" / "quantum").iterdir()
             if p.is_dir() and not p.name.startswith("_")}
    homes |= {p.name for p in (root / "services").iterdir()
              if p.is_dir() and not p.name.startswith("_")}
    homes.add("bench")
    for path in (root / "tests").rglob("test_*.py"):
        parts = path.relative_to(root / "tests").parts
        if parts[0] == "systemd" and len(parts) == 2:
            continue  # the whole fleet in a booted container (`make test-systemd`)
        assert len(parts) == 3 and parts[0] in ("unit", "integration"), path
        assert parts[1] in homes, f"{path}: {parts[1]} is neither a package nor a service"
