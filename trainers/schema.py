"""Typed config sections built from plain mappings, with one-line errors naming the dotted key.

Every config section is a frozen dataclass whose fields use simple types (``int``, ``float``,
``str``, ``bool``, ``Literal[...]``, ``X | None`` and nested sections). ``build`` turns a nested
mapping (from YAML or ``--set`` overrides) into such a dataclass, coercing what is unambiguous
(``3e5`` → 300000 for an int field, ``"1e-5"`` → 1e-5 for a float field) and refusing the rest.
A section may define ``validate(self)`` for range checks; it raises ``ConfigError`` with the key
relative to the section, and ``build`` prefixes the section's path.

A field whose ``metadata`` has ``{"result": False}`` does not change a run's result (logging
intervals, thread counts): run ids leave it out. A field declared with ``added_later`` changes
the result but joined the config after run ids were first issued: at its default it is left out
of run ids, so every config that never sets it keeps the id it always had.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from trainers.errors import ConfigError

T = TypeVar("T")


def not_result(default: Any) -> Any:
    """A field that does not change the run's result (excluded from run ids)."""
    return dataclasses.field(default=default, metadata={"result": False})


def added_later(default: Any) -> Any:
    """A result-changing field that run ids include only when it is set away from ``default``."""
    return dataclasses.field(default=default, metadata={"id_omits_default": True})


def build(cls: type[T], mapping: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``; missing keys take their defaults."""
    mapping = dict(mapping or {})
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key (known keys: {known})")
    values = {}
    for name, value in mapping.items():
        values[name] = _coerce(value, hints[name], _join(path, name))
    try:
        instance = cls(**values)
    except ConfigError as error:
        raise _prefixed(error, path) from None
    validate = getattr(instance, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as error:
            raise _prefixed(error, path) from None
    return instance


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a nested plain dict (the inverse of ``build``)."""
    return dataclasses.asdict(config)


def flat_dict(config: Any, prefix: str = "") -> dict[str, Any]:
    """The config as dotted keys → leaf values: ``flatten(to_dict(config))`` without the deep
    copy, which made hashing a config the largest cost of expanding a large grid."""
    flat: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        dotted = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            flat.update(flat_dict(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"preset": "tiny"}}`` → ``{"model.preset": "tiny"}``."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        dotted = _join(prefix, key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def set_dotted(nested: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``nested["a"]["b"] = value`` for ``dotted_key == "a.b"``, creating sections as needed."""
    *sections, leaf = dotted_key.split(".")
    node = nested
    for i, section in enumerate(sections):
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(sections[: i + 1])}: is a value, not a section")
        node = child
    node[leaf] = value


def leaf_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted name → type hint of every leaf field of ``cls`` (recursively)."""
    hints = _type_hints(cls)
    out: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            out.update(leaf_types(hint, f"{prefix}{field.name}."))
        else:
            out[f"{prefix}{field.name}"] = hint
    return out


@functools.cache
def result_keys(cls: type) -> frozenset[str]:
    """Dotted names of every field of ``cls`` (recursively) that changes a run's result."""
    keys: set[str] = set()
    hints = _type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("result", True):
            continue
        if dataclasses.is_dataclass(hints[field.name]):
            keys |= {f"{field.name}.{k}" for k in result_keys(hints[field.name])}
        else:
            keys.add(field.name)
    return frozenset(keys)


@functools.cache
def defaults_left_out_of_ids(cls: type) -> Mapping[str, Any]:
    """Dotted name → default of every ``added_later`` field of ``cls`` (recursively)."""
    omitted: dict[str, Any] = {}
    hints = _type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            nested = defaults_left_out_of_ids(hints[field.name])
            omitted |= {f"{field.name}.{k}": v for k, v in nested.items()}
        elif field.metadata.get("id_omits_default"):
            omitted[field.name] = field.default
    return types.MappingProxyType(omitted)


@functools.cache
def _type_hints(cls: type) -> Mapping[str, Any]:
    """``cls``'s resolved field types. Cached: resolving string annotations costs about 0.5 ms a
    class, and a 10,000-point grid builds and hashes 10,000 configs of several sections each."""
    return types.MappingProxyType(typing.get_type_hints(cls))


def _coerce(value: Any, hint: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: must be a section (mapping), got {value!r}")
        return build(hint, value, path)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: cannot use {value!r} here")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{path}: must be one of {allowed}, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{path}: must be true or false, got {value!r}")
    if hint is int:
        return _to_int(value, path)
    if hint is float:
        return _to_float(value, path)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: must be a string, got {value!r}")
    raise TypeError(f"{path}: unsupported config type {hint!r}")  # a bug in a config class


def _to_float(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{path}: must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{path}: must be a number, got {value!r}") from None
    else:
        raise ConfigError(f"{path}: must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{path}: must be finite, got {value!r}")
    return number


def _to_int(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _to_float(value, path) if not isinstance(value, bool) else None
    if number is None or number != int(number):
        raise ConfigError(f"{path}: must be an integer, got {value!r}")
    return int(number)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _prefixed(error: ConfigError, path: str) -> ConfigError:
    return ConfigError(_join(path, str(error))) if path else error
