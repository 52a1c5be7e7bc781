"""Turning plain data (parsed YAML, ``--set`` overrides) into the config dataclasses, with errors that
name the key: type checks, unknown keys, renamed keys. Generic over dataclasses; ``config.py`` holds
the sections and the entry points (``load_config``, ``config_from_dict``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value, missing file)."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotated type ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {tp}, got {type(value).__name__} {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{where}: unsupported config type {tp}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


# Renamed keys, old dotted name -> new one. In a config file or override the old name is an error
# that names the new one; configs stored in older checkpoints are upgraded (upgrade_renamed_keys).
RENAMED_KEYS = {"eval.use_ema": "eval.use_ema_for_eval_and_sampling"}


def upgrade_renamed_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of nested config data with renamed keys under their new names: for the config stored
    in a checkpoint written before a rename, which must stay loadable."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in RENAMED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = out.get(old_section)
        if isinstance(section, dict) and old_key in section:
            out.setdefault(new_section, {})[new_key] = section.pop(old_key)
    return out


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    renamed = [f"{where}.{k}" for k in unknown if f"{where}.{k}" in RENAMED_KEYS]
    if renamed:
        raise ConfigError(f"{renamed[0]} was renamed to {RENAMED_KEYS[renamed[0]]}: use the new name")
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        key_where = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, key_where)
        else:
            kwargs[name] = _coerce(value, tp, key_where)
    try:
        return cls(**kwargs)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where or 'config'}: {err}") from None


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: key must look like section.key")
    # YAML parsing gives 3 -> int, 3e-4 -> float ("3e-4" needs a dot for YAML 1.1), true -> bool.
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") and not value.isalpha() else value
        except ValueError:
            pass
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to nested plain data (a copy is returned)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        (section, key), value = _parse_override(text)
        section_data = merged.setdefault(section, {})
        if not isinstance(section_data, dict):
            raise ConfigError(f"--set {text!r}: {section!r} is not a section")
        section_data[key] = value
    return merged
