"""What identifies a training run, so that checkpoints are only resumed by the same run."""

from __future__ import annotations

from pathlib import Path

from glass.io import file_sha256, fingerprint, folder_digest
from glass.train.params import TrainParams


def run_fingerprint(phase: int, train: TrainParams, seed: int, refs: dict[str, str],
                    shard_dir: str | Path, init_dir: str | Path | None) -> str:
    """Names a run's scratch folder: everything that decides the weights it learns (not the
    logging and checkpoint cadence, so that changing those resumes the same run)."""
    relevant = {
        "phase": phase,
        "train": dict(train.learning(), seed=seed),
        "refs": refs,
        "shards": file_sha256(Path(shard_dir) / "manifest.json"),
        "init": folder_digest(init_dir) if init_dir else None,
    }
    return fingerprint(relevant, 16)
