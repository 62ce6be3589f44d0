"""Atomic, resumable file output.

Everything a stage produces is written to a temporary name beside its destination and renamed
into place only when complete, so an interrupted run never leaves a half-written file where a
finished one is expected, and never damages a file that was already there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, IO


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs are shared files
    try:
        with open(tmp_name, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def dumps_canonical(obj: Any) -> str:
    """JSON with sorted keys and fixed separators, so equal data gives equal bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, sort_keys=True, ensure_ascii=False, indent=indent)
        handle.write("\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one canonical JSON object per line atomically; return the number of records."""
    count = 0
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(dumps_canonical(record) + "\n")
            count += 1
    return count


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file, naming the file and line on malformed input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (was the stage that writes it run?)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    return records


class ResumableJsonl:
    """An append-only JSONL scratch file keyed by ``key_field``, for work that may be interrupted.

    Records already present are loaded on open (a torn last line from a crash is dropped), so a
    rerun can skip finished keys. Each ``append`` is flushed and fsynced before returning.
    """

    def __init__(self, path: str | os.PathLike, key_field: str):
        self.path = Path(path)
        self.key_field = key_field
        self.records: dict[str, dict] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load_existing()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _load_existing(self) -> None:
        if not self.path.exists():
            return
        valid_bytes = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # torn final line from an interrupted write
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    break
                self.records[record[self.key_field]] = record
                valid_bytes += len(raw)
        # Cut anything after the last complete record so appends start on a clean line.
        with open(self.path, "r+b") as handle:
            handle.truncate(valid_bytes)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: Iterable[dict]) -> None:
        for record in records:
            self._handle.write(dumps_canonical(record) + "\n")
            self.records[record[self.key_field]] = record
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ResumableJsonl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
