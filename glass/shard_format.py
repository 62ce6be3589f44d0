"""The shard format shared by synthesis (which writes it) and training (which reads it).

Kept apart from both, so that a change to how masks are made (``glass.synth``) never reruns
training, and a change to the loader never reruns synthesis. A shard folder::

    shard-000000.tar    per sample <key>.jpg, <key>.json, <key>.mask.png (uint8 label map:
                        BACKGROUND_LABEL, k = the k-th class of the prompt, UNSURE_LABEL),
                        optionally <key>.attn.npy
    shard-000000.json   sidecar: keys, skipped prompts with reasons, sha256 of the tar
    ...
    manifest.json       written last: every shard's summary, totals, the run's settings
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from glass.errors import InvalidInput

BACKGROUND_LABEL = 0
# Pseudo-mask pixels whose class the attention does not settle (objectness between the low and
# high thresholds, paper supplement): the losses ignore them. The one name for the 255 label.
UNSURE_LABEL = 255

SHARD_PATTERN = re.compile(r"^shard-(\d{6})\.(tar|json|tar\.tmp)$")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "glass-synth-shards/1"
# Member extensions of a sample.
IMAGE_MEMBER, METADATA_MEMBER, MASK_MEMBER, ATTENTION_MEMBER = "jpg", "json", "mask.png", "attn.npy"
# Characters WebDataset reserves in a member name: the key ends at the first '.', and a '/'
# would make part of the key a directory.
_FORBIDDEN_KEY_CHARS = (".", "/", "\\", "\0")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def sidecar_path(tar_path: str | os.PathLike) -> Path:
    """``shard-000123.tar`` → ``shard-000123.json``."""
    return Path(tar_path).with_suffix(".json")


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"sample key must be a non-empty string, got {key!r}")
    bad = [c for c in _FORBIDDEN_KEY_CHARS if c in key]
    if bad:
        raise InvalidInput(f"sample key {key!r} contains {bad}: WebDataset keys may not contain "
                           "'.', '/' or '\\' (the key ends at the first '.' of a member name)")
    return key


def read_sidecar(tar_path: str | os.PathLike) -> dict[str, Any] | None:
    """The shard's sidecar, or None when it is missing or unreadable."""
    try:
        with open(sidecar_path(tar_path), encoding="utf-8") as handle:
            sidecar = json.load(handle)
    except (OSError, ValueError):
        return None
    return sidecar if isinstance(sidecar, dict) else None


def read_samples(tar_path: str | os.PathLike, wanted: set[str] | None = None
                 ) -> tuple[dict[str, dict[str, bytes]], str]:
    """({key: {extension: bytes}} of the ``wanted`` keys (None: all) in tar order, and an error
    text if the tar broke off, else ""). Headers of unwanted members are read, their data
    seeked over."""
    found: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                if (wanted is None or key in wanted) and member.isfile():
                    found.setdefault(key, {})[extension] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        return found, f"unreadable tar ({type(error).__name__}: {error})"
    return found, ""
