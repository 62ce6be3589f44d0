"""What identifies a training run, so that checkpoints are only resumed by the same run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from glass.io import dumps_canonical, file_sha256

# Settings that change what is logged or how often it is saved, never what is learned.
NON_LEARNING_SECTIONS = ("logging",)


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def run_fingerprint(phase: int, train: dict[str, Any], refs: dict[str, str], shard_dir: str | Path,
                    init_dir: str | Path | None) -> str:
    relevant = {
        "phase": phase,
        "train": {k: v for k, v in train.items() if k not in NON_LEARNING_SECTIONS},
        "refs": refs,
        "shards": file_sha256(Path(shard_dir) / "manifest.json"),
        "init": _folder_digest(Path(init_dir)) if init_dir else None,
    }
    return hashlib.sha256(dumps_canonical(relevant).encode()).hexdigest()[:16]
