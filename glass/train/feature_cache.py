"""Optional cache of the frozen encoder's features, one float16 ``.npy`` per (sample key, flip).

The encoder (DINOv2 ViT-B/14, docs/paper-facts.md "Model") is frozen, so the features of a generated image
never change and can be computed once. They must be the features of the exact image the model
sees: a mirrored image has other features (patch tokens are not simply mirrored, the position
embeddings are not symmetric), so the flip flag is part of the cache key and flips stay on with
the cache. Layout::

    <cache_dir>/enc-<sha256(fingerprint)[:16]>/fingerprint.txt      the encoder fingerprint
    <cache_dir>/enc-<...>/<sha256(key)[:2]>/<key>.npy               unflipped image
    <cache_dir>/enc-<...>/<sha256(key)[:2]>/<key>.flip.npy          mirrored image

``encoder_fingerprint`` names everything that decides the features (encoder model reference and
revision, input image size, resize filter, layer): another encoder or size gets another folder,
so stale features are never reused. Keys are WebDataset keys (no '.', '/'), so ``.flip`` cannot
clash with a key. Each file is written to a temporary name and renamed into place; a file that
cannot be read (a crash mid-write on a file system that reorders metadata) counts as missing and
is removed. Size: 32×32 tokens × 768 × 2 bytes = 1.5 MiB per entry at 448 px.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from glass.errors import InvalidInput
from glass.io import fingerprint
from glass.shard_format import validate_key

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.txt"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _flags(flipped: Sequence[bool] | torch.Tensor | None, count: int) -> list[bool]:
    if flipped is None:
        return [False] * count
    flags = [bool(f) for f in (flipped.tolist() if isinstance(flipped, torch.Tensor) else flipped)]
    if len(flags) != count:
        raise InvalidInput(f"{len(flags)} flip flags for {count} keys")
    return flags


class FeatureCache:
    def __init__(self, cache_dir: str | os.PathLike, encoder_fingerprint: str):
        if not isinstance(encoder_fingerprint, str) or not encoder_fingerprint.strip():
            raise InvalidInput("encoder_fingerprint must be a non-empty string (encoder model "
                             "reference + image size)")
        self.fingerprint = encoder_fingerprint
        digest = fingerprint(encoder_fingerprint, 16)
        self.root = Path(cache_dir) / f"enc-{digest}"
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / FINGERPRINT_FILE
        if marker.exists():
            recorded = marker.read_text(encoding="utf-8")
            if recorded != encoder_fingerprint:
                raise InvalidInput(f"{self.root}: holds features of {recorded!r}, not "
                                 f"{encoder_fingerprint!r} (digest collision?)")
        else:
            self._write_atomic(marker, encoder_fingerprint.encode())
        self.hits = self.misses = 0

    def path(self, key: str, flipped: bool = False) -> Path:
        validate_key(key)
        bucket = fingerprint(key, 2)  # ≤ 256 entries per folder level
        return self.root / bucket / f"{key}{'.flip' if flipped else ''}.npy"

    def has(self, key: str, flipped: bool = False) -> bool:
        return self.path(key, flipped).is_file()

    def get(self, keys: Sequence[str],
            flipped: Sequence[bool] | torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, ...) float16 features of the keys (with their flip flags), or None unless every
        one is cached."""
        arrays = []
        for key, flip in zip(keys, _flags(flipped, len(keys))):
            path = self.path(key, flip)
            try:
                arrays.append(np.load(path, allow_pickle=False))
            except FileNotFoundError:
                self.misses += 1
                return None
            except Exception as error:  # noqa: BLE001 - unreadable entry: recompute it
                log.warning("feature cache: removing unreadable %s (%s)", path, error)
                path.unlink(missing_ok=True)
                self.misses += 1
                return None
        if not arrays:
            return None
        shapes = {array.shape for array in arrays}
        if len(shapes) != 1:
            raise InvalidInput(f"{self.root}: cached features of {list(keys)} differ in shape "
                             f"{sorted(shapes)}")
        self.hits += 1
        return torch.from_numpy(np.stack(arrays).astype(np.float16, copy=False))

    def put(self, keys: Sequence[str], features: torch.Tensor | np.ndarray, *,
            flipped: Sequence[bool] | torch.Tensor | None = None) -> None:
        """Store ``features[i]`` (cast to float16) for ``keys[i]`` with its flip flag.

        ``flipped`` is keyword-only: swapped with ``features`` it would store flags as features.
        """
        if isinstance(features, torch.Tensor):
            if not features.is_floating_point():
                raise TypeError(f"features must be floating point, got {features.dtype}")
            features = features.detach().to("cpu", torch.float32).numpy()
        features = np.asarray(features)
        if not np.issubdtype(features.dtype, np.floating) or features.ndim < 2:
            raise TypeError(f"features must be a floating (B, ...) array, got {features.dtype} "
                            f"{features.shape}")
        with np.errstate(over="ignore"):  # overflow is reported below, by key
            values = features.astype(np.float16)
        if len(values) != len(keys):
            raise InvalidInput(f"{len(values)} feature rows for {len(keys)} keys")
        for key, flip, row in zip(keys, _flags(flipped, len(keys)), values):
            if not np.isfinite(row).all():
                # float16 overflows above 65504: caching inf would silently corrupt training
                raise InvalidInput(f"features of {key!r} are not finite in float16")
            self._write_atomic(self.path(key, flip), _npy_bytes(row))

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the cache may be shared
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)  # concurrent writers of one key write equal bytes
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
