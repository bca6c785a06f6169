"""The payload tables of ``docs/streams.md``: pydantic models described field by field.

Each event payload (and each record nested in one) becomes a table of field, readable type
(``float | None``, ``tuple[str, ...]``), constraints (``> 0``, ``finite``, a pattern) and
default, read from the model's annotations and metadata, so the doc states what the
contract enforces rather than what someone remembered to write. This module writes no file;
:mod:`.docs_streams` places the tables.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from quantum.registry.generate.docs_common import cell


def _constraints(item: Any) -> list[str]:
    """Readable constraints of one metadata item (a bound, a pattern, a validator)."""
    if isinstance(item, FieldInfo):  # ``Annotated[str, Field(pattern=...)]``
        return [text for inner in item.metadata for text in _constraints(inner)]
    # annotated_types' Gt/Ge/Lt/Le each carry one attribute named after the bound.
    for attribute, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
        bound = getattr(item, attribute, None)
        if bound is not None:
            return [f"{symbol} {bound}"]
    pattern = getattr(item, "pattern", None)
    if isinstance(pattern, str):
        return [f"matches `{pattern}`"]
    function = getattr(item, "func", None)
    if function is not None:
        return [getattr(function, "__name__", repr(function)).strip("_")]
    return []


def describe_type(annotation: Any, metadata: Iterable[Any] = ()) -> tuple[str, list[str]]:
    """A readable type and its constraints (``finite``, ``> 0``) for the docs tables."""
    constraints = [text for item in metadata for text in _constraints(item)]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        text, inner = describe_type(args[0], args[1:])
        return text, inner + constraints
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(arg) for arg in args]
        for _, inner in parts:
            constraints += [c for c in inner if c not in constraints]
        return " | ".join(text for text, _ in parts), constraints
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args), constraints
    if origin is not None:
        inner_parts = []
        for arg in args:
            if arg is Ellipsis:
                inner_parts.append("...")
                continue
            text, inner = describe_type(arg)
            inner_parts.append(text)
            constraints += [c for c in inner if c not in constraints]
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(inner_parts)}]", constraints
    if annotation is type(None):
        return "None", constraints
    return getattr(annotation, "__name__", str(annotation)), constraints


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation refers to (itself, or inside a union or tuple)."""
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in typing.get_args(annotation):
        found += nested_models(arg)
    return found


def field_rows(model: type[BaseModel]) -> list[str]:
    """A Markdown table of the model's fields: type, constraints and default."""
    rows = ["| field | type | constraints | default |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        text, constraints = describe_type(field.annotation, field.metadata)
        if field.is_required():
            default = "required"
        else:
            value = field.get_default(call_default_factory=True)
            default = f"`{json.dumps(value, default=str)}`"
        rows.append(
            f"| `{name}` | `{cell(text)}` | {cell(', '.join(constraints)) or ''} | "
            f"{cell(default)} |"
        )
    return rows


def doc_first_paragraph(model: type) -> str:
    """The first paragraph of a class docstring, on one line."""
    return " ".join(inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].split())
