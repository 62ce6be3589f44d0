"""Typed params for tests: a section's defaults (the paper configuration) with a few keys
changed, read through ``from_params`` as a params file would be (so every check applies)."""

from __future__ import annotations

from typing import Any

# mappings whose entries are whole specs: a test's value replaces the default's entries
_REPLACED = ("datasets", "models")


def _merge(default: Any, partial: Any, key: str = "") -> Any:
    if isinstance(default, dict) and isinstance(partial, dict) and key not in _REPLACED:
        merged = dict(default)
        for name, value in partial.items():
            merged[name] = _merge(default.get(name), value, name)
        return merged
    return partial


def typed(cls, partial: dict | None = None, key: str = "params"):
    """``cls`` with the defaults of every key not in ``partial``."""
    return cls.from_params(_merge(cls().as_dict(), partial or {}), key)


def toy_settings(partial: dict | None = None):
    """The toy generator's settings (``synth.toy``: unsure band and world) with ``partial``."""
    from glass.synth.params import SynthToyParams

    return typed(SynthToyParams, partial, "synth.toy")


def toy_generator(partial: dict | None = None):
    """The project's toy generator with ``partial`` ``synth.toy`` settings."""
    from glass.synth.toy_generator import ToyGenerator

    return ToyGenerator.from_settings(toy_settings(partial))


def toy_spec(partial: dict | None = None):
    """A synthesis GeneratorSpec of the project's toy backend with ``partial`` settings."""
    from glass.synth.params import GeneratorSettings
    from glass.synth.sharded_run import GeneratorSpec

    return GeneratorSpec("toy", GeneratorSettings(backend="toy", toy=toy_settings(partial)))
