"""Configs: frozen dataclasses, TOML files and ``--set key=value`` overrides.

Every value is validated when its dataclass is built, so a bad config fails before any work starts.
A run's config is a set of named sections (for training: ``train`` and ``agent``), each one dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type, or a value out of range."""


def check(condition: bool, name: str, value: Any, expectation: str) -> None:
    """Raise :class:`ConfigError` ``name=value: must be expectation`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"invalid config value {name}={value!r}: must be {expectation}")


def check_positive(config: Any, name: str) -> None:
    """``config.name`` must be a finite number above 0."""
    value = getattr(config, name)
    check(value > 0 and math.isfinite(value), name, value, "> 0 and finite")


def check_widths(config: Any, name: str) -> None:
    """``config.name`` must be a non-empty list of positive layer widths."""
    value = getattr(config, name)
    check(len(value) > 0 and all(w > 0 for w in value), name, value, "a non-empty list of positive widths")


def check_device(name: str, value: str) -> None:
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``); whether it exists is checked when used."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        device = None
    check(device is not None and device.type in ("cpu", "cuda", "mps"), name, value, "cpu, cuda, cuda:N or mps")


def _parse_scalar(text: str) -> Any:
    """A TOML scalar (``128``, ``3e-4``, ``true``) from text, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert a TOML/CLI value to the annotated type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"invalid config value {name}={value!r}")
    if origin is tuple:
        if isinstance(value, str):  # "256,256" from the command line
            value = [_parse_scalar(v) for v in value.replace(",", " ").split()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid config value {name}={value!r}: must be a list")
        elem = typing.get_args(hint)[0]
        return tuple(_coerce(v, elem, name) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"invalid config value {name}={value!r}: must be true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid config value {name}={value!r}: must be an integer")
        as_float = float(value)
        if not as_float.is_integer():
            raise ConfigError(f"invalid config value {name}={value!r}: must be an integer")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid config value {name}={value!r}: must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"invalid config value {name}={value!r}: must be a string")
        return value
    return value


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` (from TOML or the command line) converted to the type ``hint`` as a config field of that type is;
    :class:`ConfigError` naming ``name`` if it does not fit (for keys checked outside a dataclass, e.g. a teacher's
    settings)."""
    return _coerce(value, hint, name)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass and its bases (read from their source)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = str(nxt.value.value).strip()  # type: ignore[union-attr]
    return docs


def build(cls: type, data: Mapping[str, Any], section: str = "") -> Any:
    """Build config dataclass ``cls`` from a mapping, checking keys and types; errors name ``section.key``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = f"{section}." if section else ""
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key(f"{prefix}{key}", [prefix + k for k in fields])
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # the dataclass's own checks name the bare field: add its section
        raise ConfigError(_with_section(str(e), prefix)) from None


def _with_section(message: str, prefix: str) -> str:
    """``invalid config value gamma=...`` -> ``invalid config value agent.gamma=...``."""
    head = "invalid config value "
    if not prefix or not message.startswith(head) or message.startswith(head + prefix):
        return message
    return head + prefix + message.removeprefix(head)


def unknown_key(key: str, valid: typing.Sequence[str]) -> ConfigError:
    """The error for an unknown ``key``: the close match among the ``section.name`` keys ``valid`` (by name within
    the key's own section, if it names one of theirs), else the valid keys by section."""
    section, _, name = key.rpartition(".")
    same = {k.rpartition(".")[2]: k for k in valid if section and k.rpartition(".")[0] == section}
    pool = same or {k: k for k in valid}
    close = difflib.get_close_matches(name if same else key, list(pool), n=1, cutoff=0.6)
    if close:
        return ConfigError(f"unknown config key {key!r}; did you mean {pool[close[0]]}?")
    by_section: dict[str, list[str]] = {}
    for k in valid:
        by_section.setdefault(k.rpartition(".")[0], []).append(k.rpartition(".")[2])
    listed = "; ".join(f"[{s}] {', '.join(names)}" if s else ", ".join(names) for s, names in by_section.items())
    return ConfigError(f"unknown config key {key!r}; valid keys: {listed}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"agent.batch_size=128"`` -> ``("agent.batch_size", 128)``; values are read as TOML, else as strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    return key, _parse_scalar(raw)


def read_config_file(path: str | Path, sections: typing.Collection[str]) -> dict[str, dict[str, Any]]:
    """A ``--config`` TOML file's sections (each one of ``sections``); :class:`ConfigError` names the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for name, values in loaded.items():
        if name not in sections or not isinstance(values, dict):
            raise ConfigError(f"unknown config section [{name}] in {path}; valid sections: {', '.join(sections)}")
    return loaded


def load_sections(
    schema: Mapping[str, type],
    base: Mapping[str, Mapping[str, Any]] | None = None,
    toml_path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    flags: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Resolve a sectioned config: defaults <- ``base`` <- TOML file <- ``flags`` <- ``--set`` overrides.

    ``flags`` are the values of explicit command-line flags (``--env``, ``--seed``, ...): they beat the file, so
    ``--config a.toml --env X`` trains X. An override key may name its section (``agent.batch_size``) or be bare
    (``batch_size``) when exactly one section has that field.
    """
    data: dict[str, dict[str, Any]] = {name: dict((base or {}).get(name, {})) for name in schema}
    if toml_path is not None:
        for name, values in read_config_file(toml_path, list(schema)).items():
            data[name].update(values)
    for name, values in (flags or {}).items():
        data[name].update(values)
    for text in overrides:
        key, value = parse_override(text)
        section, name = config_key(schema, key)
        data[section][name] = value
    return {name: build(cls, data[name], name) for name, cls in schema.items()}


def config_key(schema: Mapping[str, type], key: str) -> tuple[str, str]:
    """``(section, name)`` of an override key: ``agent.batch_size``, or a bare name only one section has."""
    return config_key_in({s: [f.name for f in dataclasses.fields(cls)] for s, cls in schema.items()}, key)


def config_key_in(names: Mapping[str, typing.Sequence[str]], key: str) -> tuple[str, str]:
    """:func:`config_key` over ``{section: field names}`` (no dataclass needed: the CLI checks keys before it
    imports the recipes)."""
    schema = names
    if "." in key:
        section, name = key.split(".", 1)
        if name in names.get(section, ()):
            return section, name
        known = names.get(section)
        valid = [f"{section}.{n}" for n in known] if known else [f"{s}.{n}" for s in names for n in names[s]]
        raise unknown_key(key, valid)
    owners = [s for s in schema if key in names[s]]
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is in sections {' and '.join(owners)}; write "
                          + " or ".join(f"{s}.{key}" for s in owners))
    if not owners:
        raise unknown_key(key, [f"{s}.{n}" for s in names for n in names[s]])
    return owners[0], key


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as a TOML-friendly dict (tuples become lists, None fields are left out)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def toml_value(value: Any) -> str:
    """One value as TOML text: ``true``, ``inf``, ``"Hopper-v5"``, ``[256, 256]`` (arrays on one line)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def section_fields(cls: type) -> list[tuple[str, str | None, str]]:
    """``(name, default as TOML text or None when unset, docstring)`` of each field of a config dataclass."""
    docs, defaults = field_docs(cls), cls()
    out = []
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        out.append((f.name, None if value is None else toml_value(value), docs.get(f.name, "")))
    return out


def documented_toml(schema: Mapping[str, type]) -> str:
    """The defaults of a sectioned config as a TOML file, each key under its docstring in ``#`` comments
    (a key without a default, None, is left commented out)."""
    return render_documented_toml({section: section_fields(cls) for section, cls in schema.items()})


def render_documented_toml(sections: Mapping[str, typing.Sequence[typing.Sequence[Any]]],
                           notes: Mapping[str, str] | None = None, commented: typing.Collection[str] = ()) -> str:
    """:func:`documented_toml` from ``(name, TOML text or None, doc)`` per field and section; ``notes`` adds a
    comment line under a ``section.key``'s doc, and the keys in ``commented`` are written commented out."""
    lines = []
    for section, fields in sections.items():
        lines.append(f"[{section}]")
        for name, text, doc in fields:
            key = f"{section}.{name}"
            lines += [f"# {line.strip()}".rstrip() for line in doc.splitlines()]
            if notes and key in notes:
                lines.append(f"# {notes[key]}")
            if text is None:
                lines.append(f"# {name} = (unset)")
            else:
                lines.append(f"{'# ' if key in commented else ''}{name} = {text}")
        lines.append("")
    return "\n".join(lines)


def to_toml(sections: Mapping[str, Any]) -> str:
    """Serialise ``{section: dataclass}`` to TOML text."""
    return tomli_w.dumps({name: to_dict(cfg) for name, cfg in sections.items()})


def read_toml(path: str | Path) -> dict[str, Any]:
    return tomllib.loads(Path(path).read_text())
