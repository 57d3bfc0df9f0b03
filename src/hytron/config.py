"""Typed dataclass configs: build from dicts/YAML with errors that name the field, named recipes shipped in the
package, `key.sub=value` overrides, save resolved configs."""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the field."""


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {hint.__name__}, got {type(value).__name__}")
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        items = [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_check_type(k, kt, f"{where} key"): _check_type(v, vt, f"{where}[{k!r}]") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys and wrong types by field name. A nested
    section given in part is laid over that field's default, so the fields it leaves out keep the defaults the
    enclosing recipe chose for them (not those of the section's class)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown field(s) {unknown}; known fields: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        default = fields[name].default_factory
        if isinstance(value, dict) and default is not dataclasses.MISSING:
            base = default()
            if dataclasses.is_dataclass(base):  # a section given in part keeps the rest of its default, field by
                value = {**to_dict(base), **value}  # field (a recipe's own optimizer defaults, say)
        kwargs[name] = _check_type(value, hints[name], path)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON/YAML-serialisable data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def read_json_file(path: Path, missing: str, error: type[ValueError] = ValueError) -> Any:
    """The JSON value in the file `path`: FileNotFoundError(`missing`) when there is no such file, `error` naming
    the file when it is not valid JSON."""
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON: {e}") from None


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def save_resolved(obj: Any, path: str | Path) -> Path:
    """Write a resolved dataclass config as JSON (readable by humans and by `from_dict`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: a path as given, or NAME.yaml among the recipes shipped inside the package."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = importlib.resources.files("hytron") / "recipes"
    named = shipped / f"{name_or_path}.yaml"
    if named.is_file():
        return Path(str(named))
    known = sorted(f.name.removesuffix(".yaml") for f in shipped.iterdir() if f.name.endswith(".yaml"))
    raise FileNotFoundError(f"no recipe {str(name_or_path)!r}: not a file, and not one of the named recipes {known}")


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """`data` (copied) with `key.sub=value` items applied, values parsed as YAML: the `--set` of every verb."""
    import yaml

    data = copy.deepcopy(data)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
        *parents, last = key.strip().split(".")
        node = data
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed):  # YAML 1.1 reads 1e-3 as a string
            parsed = float(parsed)
        node[last] = parsed
    return data


def load_recipe(cls: type[T], name_or_path: str | Path, overrides: list[str] | None = None,
                section: str | None = None) -> T:
    """A recipe (a file or a shipped name; or one `section` of it) as `cls`, with `key.sub=value` overrides."""
    path = recipe_path(name_or_path)
    data = load_mapping(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f"recipe {name_or_path}: has no {section!r} section (sections: {sorted(data)})")
        data = data[section]
    return from_dict(cls, apply_overrides(data, overrides), where=f"recipe {name_or_path}")
