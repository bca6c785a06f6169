"""The settings keys of a service, read from its settings class; this module writes nothing.

Both the env file examples (:mod:`.envfiles`) and the settings tables of
``docs/services.md`` (:mod:`.docs_services`) are rendered from the :class:`Setting` list
built here: each field of the class the registry names, its ``QT_`` env name, its default
as an env-file value, and its description from the field or the class docstring's
``Attributes:`` section. A field without a description stops generation, so every key an
operator can set is documented.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import re
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from quantum.config import ENV_PREFIX, FleetSettings
from quantum.registry.fleet import ServiceSpec
from quantum.registry.generate.common import GenerationError

_ENTRY = re.compile(r"^(?P<names>[a-z_][a-z0-9_]*(?:\s*/\s*[a-z_][a-z0-9_]*)*):\s*(?P<text>.*)$")
_SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_.,:/@+=-]*$")


@dataclass(frozen=True)
class Setting:
    """One settings key as written in an env file and the docs."""

    field: str
    env_name: str
    value: str  # the default as an env file value ("" when unset)
    description: str
    secret: bool
    required: bool
    unset: bool  # no value by default (None): the env line is commented out


def settings_class(spec: ServiceSpec) -> type[FleetSettings]:
    """Import the ``module:Class`` the registry names; it must be a FleetSettings."""
    module_name, _, class_name = spec.settings.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, FleetSettings)):
        raise GenerationError(f"{spec.name}: {spec.settings} is not a FleetSettings subclass")
    return cls


def attribute_docs(cls: type) -> dict[str, str]:
    """Field → description from the class docstring's ``Attributes:`` section.

    Entries are ``name: text`` (or ``a / b: text`` for a pair described together), with
    continuation lines indented deeper; the section ends at a line indented less than its
    first entry.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    docs: dict[str, str] = {}
    current: list[str] = []
    entry_indent: int | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent:
            break
        match = _ENTRY.match(line.strip()) if indent == entry_indent else None
        if match:
            current = [name.strip() for name in match["names"].split("/")]
            for name in current:
                docs[name] = match["text"].strip()
        elif current:
            for name in current:
                docs[name] = f"{docs[name]} {line.strip()}"
    return docs


def _env_value(value: Any) -> str:
    """A default as an env-file value that systemd and pydantic-settings read back equal."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        text = json.dumps(sorted(value) if isinstance(value, (set, frozenset)) else value)
    elif isinstance(value, enum.Enum):
        text = str(value.value)
    else:
        text = str(value)
    if _SAFE_ENV_VALUE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def settings_of(cls: type[FleetSettings], *, inherited: bool) -> list[Setting]:
    """The keys of ``cls``: its own (not FleetSettings') or, with ``inherited``, only those."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, FleetSettings):
            docs.update(attribute_docs(klass))
    out: list[Setting] = []
    for name, field in cls.model_fields.items():
        if (name in FleetSettings.model_fields) != inherited:
            continue
        out.append(_setting(cls, name, field, docs))
    return out


def _setting(cls: type, name: str, field: FieldInfo, docs: dict[str, str]) -> Setting:
    description = field.description or docs.get(name)
    if not description:
        raise GenerationError(
            f"{cls.__module__}:{cls.__qualname__}.{name} has no description: add it to the "
            "class docstring's Attributes: section"
        )
    secret = _is_secret(field.annotation)
    required = field.is_required()
    default = None if required else field.get_default(call_default_factory=True)
    unset = required or default is None
    value = "" if unset or secret else _env_value(default)
    return Setting(
        field=name,
        env_name=ENV_PREFIX + name.upper(),
        value=value,
        description=" ".join(description.split()),
        secret=secret,
        required=required,
        unset=unset,
    )
