"""Typed, validated params: each section of a params file read once, in the stage, into frozen
dataclasses.

A section is a :class:`Params` dataclass. :meth:`Params.from_params` reads a YAML mapping into
it and rejects, naming the full key path (``train.optim.max_grad_norm``) and what is allowed:

- unknown keys (with the closest known key: a misspelt key must never be ignored silently),
- missing keys (every key of a params file is required unless its field says ``optional``:
  a params file states every setting it runs with),
- wrong types (``bool`` is not an ``int``; a string is not a number, and PyYAML reads ``1e-4``
  as a string, so the message says to write ``1.0e-4``),
- values out of range (``param(min=…, max=…, gt=…)``) and cross-field problems (``validate``).

The dataclass defaults are the paper configuration's values (``params.yaml``; a test keeps the
two equal), so library callers and tests get the paper's settings by default, while a params
file must spell out each key. Library functions take these typed objects, never dicts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from glass.errors import GlassError, MissingInput

P = TypeVar("P", bound="Params")

# The top-level sections a params file may have (each stage reads the ones it declares in
# dvc.yaml; `python -m glass.check_params <file>` reads them all).
TOP_LEVEL_KEYS = ("config", "seed", "models", "data", "caption", "prompts", "synth", "train",
                  "evaluate", "pretrain")


class ParamsError(GlassError, ValueError):
    """A params key is unknown, missing, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"params key {key}: {problem}")
        self.key = key
        self.problem = problem
        self.field_of: type | None = None   # set when raised by a dataclass's own checks
        self.field_name: str | None = None

    def __reduce__(self):   # picklable (Ray sends errors between processes)
        return type(self), (self.key, self.problem)


def param(default: Any = dataclasses.MISSING, *, min: float | None = None,
          max: float | None = None, gt: float | None = None, optional: bool = False,
          allow_nan: bool = False) -> Any:
    """A dataclass field with range checks (``min``/``max`` inclusive, ``gt`` exclusive) that
    a params file may omit only when ``optional`` (it then takes ``default``). Numbers must be
    finite unless ``allow_nan`` (YAML's ``.nan`` as a deliberate "undefined")."""
    metadata = {"min": min, "max": max, "gt": gt, "optional": optional, "allow_nan": allow_nan}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (or default_factory) for mutable defaults")
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def nested(factory: type, *, optional: bool = False, flatten: bool = False) -> Any:
    """A sub-section field, ``factory()`` by default. ``flatten``: its keys sit in the parent's
    mapping itself (e.g. the toy world's settings beside ``train_images``)."""
    return dataclasses.field(default_factory=factory,
                             metadata={"optional": optional or flatten, "flatten": flatten})


class Params:
    """Base of every params section: a frozen dataclass (subclasses use
    ``@dataclasses.dataclass(frozen=True)``) with range checks and ``validate``."""

    def __post_init__(self) -> None:
        # the same type rules for objects built in code as for params files, so that a section
        # object is always valid (values are normalised: lists to tuples, ints to floats)
        hints = _type_hints(type(self))
        prefix = type(self).__name__
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            try:
                converted = convert(hints[spec.name], value, f"{prefix}.{spec.name}")
            except ParamsError as error:
                error.field_of, error.field_name = type(self), error.key[len(prefix) + 1:]
                raise
            if converted is not value:
                object.__setattr__(self, spec.name, converted)
            problem = _range_problem(converted, spec.metadata)
            if problem:
                raise self.invalid(spec.name, problem)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise ``self.invalid(field, problem)``."""

    def invalid(self, name: str, problem: str) -> ParamsError:
        error = ParamsError(f"{type(self).__name__}.{name}", problem)
        error.field_of, error.field_name = type(self), name
        return error

    def replace(self: P, **changes: Any) -> P:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists, flattened sub-sections inlined), the shape
        of the params file."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = plain(getattr(self, spec.name))
            if spec.metadata.get("flatten"):
                out.update(value)
            else:
                out[spec.name] = value
        return out

    @classmethod
    def from_params(cls: type[P], value: Any, key: str) -> P:
        """Read ``value`` (the YAML mapping at ``key``) into this section; see the module doc."""
        return cls.parse(value, key)

    @classmethod
    def parse(cls: type[P], value: Any, key: str) -> P:
        if not isinstance(value, Mapping):
            raise ParamsError(key, f"must be a mapping with keys {_key_list(cls)}, got "
                                   f"{describe_value(value)}")
        hints = _type_hints(cls)
        specs = dataclasses.fields(cls)
        known = _known_keys(cls)
        unknown = [name for name in value if name not in known]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParamsError(f"{key}.{name}", f"unknown key{hint} Known keys of {key}: "
                                               f"{', '.join(known)}")
        values: dict[str, Any] = {}
        for spec in specs:
            field_key = f"{key}.{spec.name}"
            field_type = hints[spec.name]
            if spec.metadata.get("flatten"):
                sub = {name: value[name] for name in _known_keys(field_type) if name in value}
                values[spec.name] = field_type.from_params(sub, key)
                continue
            if spec.name not in value:
                if spec.metadata.get("optional"):
                    continue
                raise ParamsError(field_key, f"is missing; expected {describe_type(field_type)}"
                                             f"{_default_hint(spec)}")
            values[spec.name] = convert(field_type, value[spec.name], field_key)
        try:
            return cls(**values)
        except ParamsError as error:
            if error.field_of is cls:
                raise ParamsError(f"{key}.{error.field_name}", error.problem) from None
            raise


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _known_keys(cls: type) -> list[str]:
    keys: list[str] = []
    hints = _type_hints(cls)
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("flatten"):
            keys.extend(_known_keys(hints[spec.name]))
        else:
            keys.append(spec.name)
    return keys


def _key_list(cls: type) -> str:
    keys = _known_keys(cls)
    return ", ".join(keys) if keys else "(none)"


def _default_hint(spec: dataclasses.Field) -> str:
    if spec.default is not dataclasses.MISSING:
        return f" (the paper configuration's value is {plain(spec.default)!r})"
    return ""


def _range_problem(value: Any, metadata: Mapping[str, Any]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        if metadata.get("allow_nan") and math.isnan(value):
            return None
        return f"must be a finite number, got {value}"
    low, high, above = metadata.get("min"), metadata.get("max"), metadata.get("gt")
    if low is not None and value < low:
        return f"must be >= {low}, got {value}"
    if above is not None and not value > above:
        return f"must be > {above}, got {value}"
    if high is not None and value > high:
        return f"must be <= {high}, got {value}"
    return None


def plain(value: Any) -> Any:
    if isinstance(value, Params):
        return value.as_dict()
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# Conversion by type annotation


def describe_type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [describe_type(arg) for arg in args if arg is not type(None)]
        text = " or ".join(parts)
        return text + " or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) if a is not None else "null" for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe_type(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe_type(a) for a in args)})"
    if origin in (dict, Mapping):
        return f"a mapping of names to {describe_type(args[1])}"
    if isinstance(tp, type) and issubclass(tp, Params):
        return f"a mapping with keys {_key_list(tp)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def describe_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r}"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _wrong(key: str, tp: Any, value: Any) -> ParamsError:
    hint = ""
    if isinstance(value, str) and _looks_numeric(value) and _accepts_number(tp):
        hint = (" (PyYAML reads numbers such as 1e-4 as text; write 1.0e-4, with a dot and a "
                "signed exponent)")
    elif isinstance(value, bool) and typing.get_origin(tp) is Literal and any(
            isinstance(arg, str) for arg in typing.get_args(tp)):
        hint = ' (YAML reads an unquoted no/yes/off/on as false/true: write "no" in quotes)'

    return ParamsError(key, f"must be {describe_type(tp)}, got {describe_value(value)}{hint}")


def _accepts_number(tp: Any) -> bool:
    if tp in (int, float):
        return True
    return any(_accepts_number(arg) for arg in typing.get_args(tp)
               if typing.get_origin(tp) in (Union, types.UnionType))


def convert(tp: Any, value: Any, key: str) -> Any:
    """``value`` as type ``tp`` (see the module doc), or a ParamsError naming ``key``."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _wrong(key, tp, value)
        candidates = [arg for arg in args if arg is not type(None)]
        if len(candidates) == 1:
            try:
                return convert(candidates[0], value, key)
            except ParamsError as error:
                if error.key == key and type(None) in args:
                    raise _wrong(key, tp, value) from None
                raise
        for candidate in candidates:
            try:
                return convert(candidate, value, key)
            except ParamsError as error:
                if error.key != key:
                    raise
        raise _wrong(key, tp, value)
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return value
        raise _wrong(key, tp, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(key, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
        elif len(value) != len(args):
            raise _wrong(key, tp, value)
        else:
            items = [convert(arg, item, f"{key}[{i}]")
                     for i, (arg, item) in enumerate(zip(args, value))]
        if type(value) is tuple and all(a is b for a, b in zip(items, value)):
            return value
        return tuple(items)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _wrong(key, tp, value)
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise ParamsError(f"{key}.{name}", "keys must be strings")
            out[name] = convert(args[1], item, f"{key}.{name}")
        return out
    if isinstance(tp, type) and issubclass(tp, Params):
        if isinstance(value, tp):
            return value
        return tp.from_params(value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(key, tp, value)
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return value if type(value) is int else int(value)
        raise _wrong(key, tp, value)
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            # non-finite values are refused by the field's range check unless it allows NaN
            return value if type(value) is float else float(value)
        raise _wrong(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(key, tp, value)
    raise TypeError(f"params key {key}: unsupported annotation {tp!r}")


# ---------------------------------------------------------------------------------------------
# Params files


def load_params(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a params file, its top-level sections checked by name."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"params file {path} not found (run from the repository root)")
    try:
        with open(path, encoding="utf-8") as handle:
            params = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ParamsError(str(path), f"not valid YAML ({error})") from None
    if not isinstance(params, dict):
        raise ParamsError(str(path), "expected a mapping of sections at the top level")
    unknown = [key for key in params if key not in TOP_LEVEL_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), TOP_LEVEL_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ParamsError(str(unknown[0]), f"unknown top-level section in {path}{hint} Known "
                                           f"sections: {', '.join(TOP_LEVEL_KEYS)}")
    return params


def read_section(params: Mapping[str, Any], key: str, cls: type[P]) -> P:
    """Section ``key`` of a loaded params file as ``cls``."""
    if key not in params:
        raise ParamsError(key, f"is missing; expected {describe_type(cls)}")
    return cls.from_params(params[key], key)


def read_seed(params: Mapping[str, Any]) -> int:
    """The configuration's top-level ``seed``: a non-negative integer."""
    if "seed" not in params:
        raise ParamsError("seed", "is missing; expected a non-negative integer")
    seed = convert(int, params["seed"], "seed")
    if seed < 0:
        raise ParamsError("seed", f"must be >= 0, got {seed}")
    return seed


@dataclasses.dataclass(frozen=True)
class ConfigParams(Params):
    """``config``: where DVC runs this configuration's stages and puts its outputs."""

    name: str = "paper"
    wdir: str = "."
    params_file: str = "params.yaml"
    out: str = "data/paper"

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise self.invalid("name", f"must be a plain name (a folder of scratch/), got "
                                       f"{self.name!r}")
