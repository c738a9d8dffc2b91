"""Is the current schema of a released message version compatible with what was released?

A released (type, version) is a promise to every client written against it: a message
valid under the released schema stays valid, and a client reading it finds every field it
knew. So, comparing the released JSON Schema with the current one, these are breaking:

* a field removed (or renamed, which is a removal and an addition);
* a new required field, or an optional field made required;
* a type narrowed: fewer JSON types, fewer enum values, another constant, a new or changed
  pattern or format, a larger minimum or smaller maximum (length, value, items), a
  ``null`` no longer allowed, fewer alternatives in an ``anyOf``;
* a released (type, version) no longer in the catalogue.

Compatible: a new optional field, a wider type (more enum values, looser bounds), new
descriptions and titles. To change anything else, register a new version of the message
(``@message("order.submit", version=2, …)``) and keep the old one; ``docs/catalogue/``
explains the procedure. ``breaking_changes`` returns what broke, empty when compatible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Schema = Mapping[str, Any]

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
_EXACT = ("pattern", "format", "const", "decimal_places", "multipleOf")


def breaking_changes(released: Schema, current: Schema) -> list[str]:
    """Every breaking difference between two self-contained JSON Schemas (with ``$defs``)."""
    return list(_compare(_Doc(released), released, _Doc(current), current, "", set()))


class _Doc:
    def __init__(self, root: Schema) -> None:
        self._defs: Mapping[str, Any] = root.get("$defs", {})

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            schema = self._defs[name]
        return schema


def _compare(
    old_doc: _Doc, old: Schema, new_doc: _Doc, new: Schema, path: str, seen: set[tuple[int, int]]
) -> Iterator[str]:
    old, new = old_doc.resolve(old), new_doc.resolve(new)
    if (id(old), id(new)) in seen:  # a recursive schema already compared on this path
        return
    seen = seen | {(id(old), id(new))}
    where = path or "<root>"
    yield from _types(old, new, where)
    yield from _constraints(old, new, where)
    yield from _alternatives(old_doc, old, new_doc, new, path, seen)
    yield from _properties(old_doc, old, new_doc, new, path, seen)
    if "items" in old and "items" in new and isinstance(old["items"], Mapping):
        yield from _compare(old_doc, old["items"], new_doc, new["items"], f"{path}[]", seen)


def _type_set(schema: Schema) -> set[str] | None:
    value = schema.get("type")
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def _types(old: Schema, new: Schema, where: str) -> Iterator[str]:
    old_types, new_types = _type_set(old), _type_set(new)
    if new_types is None:
        return
    if old_types is None or not old_types <= new_types:
        yield f"{where}: type narrowed from {sorted(old_types or ['any'])} to {sorted(new_types)}"


def _constraints(old: Schema, new: Schema, where: str) -> Iterator[str]:
    if "enum" in new and "enum" not in old:
        yield f"{where}: now restricted to {new['enum']}"
    elif "enum" in new and (missing := [v for v in old["enum"] if v not in new["enum"]]):
        yield f"{where}: enum no longer allows {missing}"
    for key in _EXACT:
        if key in new and new.get(key) != old.get(key):
            yield f"{where}: {key} changed from {old.get(key)!r} to {new[key]!r}"
    for key in _LOWER_BOUNDS:
        if key in new and (key not in old or new[key] > old[key]):
            yield f"{where}: {key} raised from {old.get(key)!r} to {new[key]!r}"
    for key in _UPPER_BOUNDS:
        if key in new and (key not in old or new[key] < old[key]):
            yield f"{where}: {key} lowered from {old.get(key)!r} to {new[key]!r}"


def _alternatives(
    old_doc: _Doc, old: Schema, new_doc: _Doc, new: Schema, path: str, seen: set[tuple[int, int]]
) -> Iterator[str]:
    for key in ("anyOf", "oneOf"):
        old_alts, new_alts = old.get(key), new.get(key)
        if new_alts is None:
            continue
        if old_alts is None:
            # One released shape became alternatives: compatible if one of them accepts it.
            old_alts = [old]
        if len(new_alts) < len(old_alts):
            yield f"{path or '<root>'}: {key} lost alternatives ({len(old_alts)} → {len(new_alts)})"
            continue
        for index, alt in enumerate(old_alts):
            matches = [list(_compare(old_doc, alt, new_doc, n, f"{path}<{key}{index}>", seen)) for n in new_alts]
            if all(matches):
                yield from min(matches, key=len)


def _properties(
    old_doc: _Doc, old: Schema, new_doc: _Doc, new: Schema, path: str, seen: set[tuple[int, int]]
) -> Iterator[str]:
    old_props: Mapping[str, Any] = old.get("properties", {})
    new_props: Mapping[str, Any] = new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for name in old_props:
        if name not in new_props:
            yield f"{path}.{name}: field removed"
    for name in sorted(new_required - old_required):
        yield f"{path}.{name}: " + ("optional field made required" if name in old_props else "new required field")
    for name, schema in old_props.items():
        if name in new_props:
            yield from _compare(old_doc, schema, new_doc, new_props[name], f"{path}.{name}", seen)
