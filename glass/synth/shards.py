"""WebDataset shards of synthesised samples: planning, encoding, atomic writing, resume checks.

The layout is ``glass.shard_format``'s (shared with the training loader).

Every byte of a shard is a function of its samples only (fixed tar headers, sorted members, no
timestamps), so shards are identical whatever the worker count, batch size or resume history.
A shard tar is renamed into place only after its sidecar exists, so a finished tar always has
one; a ``.tar.tmp`` left by a crash is never taken for a finished shard.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from glass.errors import InvalidInput
from glass.io import atomic_open, canonical_json, file_sha256, jsonable, write_json
from glass.io import fingerprint as settings_digest
from glass.shard_format import (MANIFEST_FORMAT, MANIFEST_NAME, SHARD_PATTERN, read_sidecar,
                                shard_name, sidecar_path, validate_key)
from glass.synth.generator import SynthSample

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "SHARD_PATTERN", "read_sidecar", "shard_name",
           "sidecar_path", "validate_key"]   # re-exported: the writer's side of the format

TMP_SUFFIX = ".tmp"


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def plan_shards(keys: list[str], shard_size: int) -> list[list[str]]:
    """Sorted keys cut into chunks of ``shard_size``: shard i is ``shard_name(i)``.

    The plan depends only on the set of sample ids, never on their input order, so a sample
    lands in the same shard however the prompts were produced or the work is split.
    """
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise InvalidInput(f"shard_size must be a positive integer, got {shard_size!r}")
    for key in keys:
        validate_key(key)
    ordered = sorted(keys)
    duplicates = sorted({a for a, b in zip(ordered, ordered[1:]) if a == b})
    if duplicates:
        raise InvalidInput(f"sample keys must be unique; repeated: {duplicates[:5]}"
                         + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""))
    return [ordered[i:i + shard_size] for i in range(0, len(ordered), shard_size)]


# ---------------------------------------------------------------------------------------------
# Encoding one sample
# ---------------------------------------------------------------------------------------------


def encode_sample(sample: SynthSample, *, jpeg_quality: int,
                  store_attention: bool) -> dict[str, bytes]:
    """The WebDataset members of one sample, by extension (``jpg``, ``json``, ``mask.png``,
    ``attn.npy``). PIL writes neither EXIF nor timestamps, so the bytes depend only on pixels."""
    validate_key(sample.key)
    members: dict[str, bytes] = {}

    buffer = io.BytesIO()
    # 4:4:4 chroma, as the toy world's images: 4:2:0 bleeds colour across small shapes.
    Image.fromarray(sample.image).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    members["jpg"] = buffer.getvalue()

    if sample.mask is not None:
        buffer = io.BytesIO()
        Image.fromarray(sample.mask).save(buffer, format="PNG")
        members["mask.png"] = buffer.getvalue()

    attention = sample.attention if store_attention else None
    if attention is not None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(attention, dtype=np.float16), allow_pickle=False)
        members["attn.npy"] = buffer.getvalue()

    metadata = dict(sample.metadata)
    metadata.update(key=sample.key, classes=list(sample.classes),
                    has_mask=sample.mask is not None, has_attention=attention is not None)
    members["json"] = canonical_json(metadata).encode("utf-8")
    return members


# ---------------------------------------------------------------------------------------------
# Writing a shard
# ---------------------------------------------------------------------------------------------


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    # Fixed header fields: the tar's bytes must not depend on who wrote it, or when.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_tar(handle: Any, encoded_samples: Mapping[str, Mapping[str, bytes]]) -> None:
    """Write samples ({key: {extension: bytes}}) as a tar, members sorted by key then extension."""
    with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8") as tar:
        for key in sorted(encoded_samples):
            validate_key(key)
            for extension in sorted(encoded_samples[key]):
                data = encoded_samples[key][extension]
                tar.addfile(_member_info(f"{key}.{extension}", len(data)), io.BytesIO(data))


def _fsync_directory(path: Path) -> None:
    # The rename itself must reach the disk, or a power cut could lose a finished shard's name.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_shard(path: str | os.PathLike, encoded_samples: Mapping[str, Mapping[str, bytes]], *,
                skipped: Iterable[Mapping[str, str]] = (),
                inputs_sha256: str | None = None) -> dict[str, Any]:
    """Write one shard and its sidecar; return the sidecar.

    Order matters for resume: the tar goes to ``<path>.tmp`` and is fsynced, then the sidecar
    (with the tar's sha256) is written atomically, and only then is the tar renamed onto
    ``path``. So a finished tar always has its sidecar, and a crash at any point leaves either
    no tar or a ``.tar.tmp``, which is never taken for a finished shard.

    ``skipped``: {"key", "reason"} of the shard's prompts that produced no sample.
    ``inputs_sha256``: digest of whatever determined the shard's content (settings and prompt
    records), so that a resumed run with other inputs redoes the shard.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp_path, "wb") as handle:
        write_tar(handle, encoded_samples)
        handle.flush()
        os.fsync(handle.fileno())

    skipped_list = sorted(({"key": str(s["key"]), "reason": str(s["reason"])} for s in skipped),
                          key=lambda s: s["key"])
    sidecar = {
        "shard": path.name,
        "num_samples": len(encoded_samples),
        "keys": sorted(encoded_samples),
        "skipped": skipped_list,
        "num_bytes": tmp_path.stat().st_size,
        "sha256": file_sha256(tmp_path),
        "inputs_sha256": inputs_sha256,
    }
    write_json(sidecar_path(path), sidecar)
    os.replace(tmp_path, path)
    _fsync_directory(path.parent)
    return sidecar


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


def completed_sidecar(tar_path: str | os.PathLike, planned_keys: list[str],
                      inputs_sha256: str | None) -> dict[str, Any] | None:
    """The sidecar of a finished shard that can be kept as is, else None (redo the shard).

    Finished means: the tar exists, its sidecar's sha256 matches the tar's bytes, the sidecar
    accounts for exactly the planned keys (written or skipped), and it was made from the same
    inputs.
    """
    tar_path = Path(tar_path)
    if not tar_path.is_file():
        return None
    sidecar = read_sidecar(tar_path)
    if sidecar is None or sidecar.get("inputs_sha256") != inputs_sha256:
        return None
    try:
        accounted = sorted(list(sidecar["keys"]) + [s["key"] for s in sidecar["skipped"]])
    except (KeyError, TypeError):
        return None
    if accounted != sorted(planned_keys):
        return None
    if sidecar.get("sha256") != file_sha256(tar_path):
        return None
    return sidecar


def remove_stale_files(out_dir: str | os.PathLike, planned_names: Iterable[str]) -> list[str]:
    """Remove shard files of earlier runs that the current plan has no place for (shards past
    the end, leftover ``.tar.tmp`` files, orphaned temporary sidecars) and the manifest, whose
    presence must mean "this run is complete". Return the removed names."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    planned = {Path(name).stem for name in planned_names}
    removed = []
    for entry in sorted(out_dir.iterdir()):
        if not entry.is_file():
            continue
        match = SHARD_PATTERN.match(entry.name)
        stale = (entry.name == MANIFEST_NAME
                 or (match is not None and (match.group(2) == "tar.tmp"
                                            or f"shard-{match.group(1)}" not in planned))
                 # atomic_open's temporaries: ".shard-000001.json.<random>.tmp"
                 or (entry.name.startswith((".shard-", "." + MANIFEST_NAME))
                     and entry.name.endswith(TMP_SUFFIX)))
        if stale:
            entry.unlink()
            removed.append(entry.name)
    return removed


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------



def build_manifest(sidecars: list[Mapping[str, Any]], settings: Mapping[str, Any],
                   fingerprint: str | None = None) -> dict:
    """Shard summaries in name order, totals, and the settings the shards were made with;
    ``fingerprint`` defaults to the digest of ``settings``."""
    shards = [{"name": s["shard"], "num_samples": s["num_samples"], "skipped": s["skipped"],
               "num_bytes": s["num_bytes"], "sha256": s["sha256"]}
              for s in sorted(sidecars, key=lambda s: s["shard"])]
    num_samples = sum(s["num_samples"] for s in shards)
    num_skipped = sum(len(s["skipped"]) for s in shards)
    return {
        "format": MANIFEST_FORMAT,
        "settings": dict(settings),
        "fingerprint": fingerprint if fingerprint is not None else settings_digest(settings),
        "shards": shards,
        "total_shards": len(shards),
        "total_prompts": num_samples + num_skipped,
        "total_samples": num_samples,
        "total_skipped": num_skipped,
    }


def write_manifest(out_dir: str | os.PathLike, sidecars: list[Mapping[str, Any]],
                   settings: Mapping[str, Any], fingerprint: str | None = None) -> dict:
    """Write ``manifest.json`` atomically; call it last, once every shard is finished."""
    manifest = build_manifest(sidecars, settings, fingerprint)
    with atomic_open(Path(out_dir) / MANIFEST_NAME, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, sort_keys=True, ensure_ascii=False, indent=2,
                  default=jsonable)
        handle.write("\n")
    return manifest
