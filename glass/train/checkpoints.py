"""Atomic, bounded training checkpoints for resuming a killed run.

``accelerate``'s ``save_state`` writes straight into its target folder, so a run killed while
saving would leave a half-written "latest" checkpoint. Here every checkpoint is saved into a
temporary folder and renamed to ``step-<n>`` only when complete; resuming picks the highest
complete step, and only the newest ``limit`` checkpoints are kept.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

_STEP_DIR = re.compile(r"^step-(\d{9})$")


def complete_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(checkpoint_dir: str | Path) -> tuple[int, Path] | None:
    found = complete_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def save_checkpoint(checkpoint_dir: str | Path, step: int, save: Callable[[Path], None],
                    limit: int) -> Path:
    """Call ``save(folder)`` on a temporary folder, then publish it as ``step-<step>``."""
    if limit < 1:
        raise ValueError(f"checkpoint limit must be >= 1, got {limit}")
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"step-{step:09d}"
    temporary = checkpoint_dir / f".tmp-step-{step:09d}"
    shutil.rmtree(temporary, ignore_errors=True)
    save(temporary)
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
    for _, old in complete_checkpoints(checkpoint_dir)[:-limit]:
        shutil.rmtree(old)
    for leftover in checkpoint_dir.glob(".tmp-step-*"):  # from runs killed while saving
        shutil.rmtree(leftover, ignore_errors=True)
    return final
