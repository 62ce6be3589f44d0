"""Atomic, resumable file output.

Everything a stage produces is written to a temporary name beside its destination and renamed
into place only when complete, so an interrupted run never leaves a half-written file where a
finished one is expected, and never damages a file that was already there. Folders are published
the same way (``publish_directory``): staged next to the destination, on its filesystem, and
swapped in by rename, even when they were produced on another filesystem (a scratch disk).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, IO
from glass.errors import InvalidInput, MissingInput

log = logging.getLogger(__name__)

# Names of the folders publish_directory leaves beside a destination while it works (and that a
# killed run may leave behind): ignored by git and DVC, removed by the next publish.
STAGING_MARK = ".staging-"
REPLACED_MARK = ".replaced-"


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
    # temporary files of a writer that was killed (SIGKILL leaves no chance to clean up): this
    # write supersedes them
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
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


# ---------------------------------------------------------------------------------------------
# Text that can be written as UTF-8

REPLACEMENT_CHARACTER = "\ufffd"


def has_lone_surrogates(text: str) -> bool:
    """Whether ``text`` holds UTF-16 surrogates, which JSON may encode (``"\\ud800"``) but UTF-8
    cannot: writing such text fails."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def repair_text(text: str) -> tuple[str, list[str]]:
    """(text that encodes as UTF-8, notes on what was changed). A surrogate pair written as two
    JSON escapes is joined into its character; a lone surrogate becomes U+FFFD."""
    if not has_lone_surrogates(text):
        return text, []
    joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    fixed = "".join(REPLACEMENT_CHARACTER if "\ud800" <= ch <= "\udfff" else ch for ch in joined)
    count = sum(1 for ch in fixed if ch == REPLACEMENT_CHARACTER) - text.count(REPLACEMENT_CHARACTER)
    return fixed, [f"{count} lone UTF-16 surrogate(s) replaced by U+FFFD"] if count else []


def clean_caption(text: str) -> tuple[str, list[str]]:
    """A caption as the rest of the pipeline can use it, with notes on every change: lone
    surrogates repaired, NUL and other control or invisible format characters (zero-width
    spaces, bidirectional overrides) removed, line breaks and tabs turned into spaces. Letters of
    any script (right-to-left ones included) are kept."""
    text, notes = repair_text(text)
    removed = 0
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\t\n\r\x0b\x0c":
            out.append(" ")
        elif category in ("Cc", "Cf"):
            removed += 1
        else:
            out.append(ch)
    if removed:
        notes.append(f"{removed} control or invisible format character(s) removed")
    return "".join(out), notes


def _utf8_safe(obj: Any, where: list[str]) -> Any:
    if isinstance(obj, str):
        if has_lone_surrogates(obj):
            where.append(obj[:40])
            return repair_text(obj)[0]
        return obj
    if isinstance(obj, dict):
        return {_utf8_safe(k, where): _utf8_safe(v, where) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_utf8_safe(item, where) for item in obj]
    return obj


def jsonable(value: Any) -> Any:
    """numpy scalars/arrays, sets and params sections → plain JSON values (else an error)."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "as_dict"):   # glass.params.Params
        return value.as_dict()
    raise TypeError(f"a value of type {type(value).__name__} is not JSON serialisable")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False, default=jsonable)


def canonical_json(obj: Any) -> str:
    """The one canonical JSON of the project: sorted keys, fixed separators, no NaN, numpy values
    as plain numbers, so equal data gives equal text (records, metadata, fingerprints); always
    encodable as UTF-8 (a lone surrogate that reached here is repaired, with a warning)."""
    try:
        text = _dumps(obj)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        where: list[str] = []
        fixed = _utf8_safe(obj, where)
        log.warning("repaired lone UTF-16 surrogates in %d string(s) of a record (%s); the "
                    "stage that made it should have repaired them", len(where),
                    _record_name(obj))
        return _dumps(fixed)


def fingerprint(obj: Any, length: int | None = None) -> str:
    """The one fingerprint helper: sha256 (hex) of ``canonical_json(obj)``, cut to ``length``
    characters (a folder name) when given."""
    digest = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return digest[:length] if length else digest


def _record_name(obj: Any) -> str:
    if isinstance(obj, dict):
        for key in ("image_id", "key", "id"):
            if key in obj:
                return f"{key} {obj[key]!r}"
    return "a record without id"


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    where: list[str] = []
    obj = _utf8_safe(obj, where)
    if where:
        log.warning("%s: repaired lone UTF-16 surrogates in %d string(s)", path, len(where))
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, sort_keys=True, ensure_ascii=False, indent=indent)
        handle.write("\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one canonical JSON object per line atomically; return the number of records."""
    count = 0
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(canonical_json(record) + "\n")
            count += 1
    return count


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file, naming the file and line on malformed input."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such file (was the stage that writes it run?)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise InvalidInput(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
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
            self._handle.write(canonical_json(record) + "\n")
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


# ---------------------------------------------------------------------------------------------
# Publishing folders


def _sibling(dest: Path, mark: str) -> Path:
    return dest.parent / f".{dest.name}{mark}{uuid.uuid4().hex[:12]}"


def remove_leftovers(dest: str | os.PathLike) -> list[Path]:
    """Remove the staging and replaced folders that killed runs left beside ``dest``."""
    dest = Path(dest)
    removed = []
    if not dest.parent.is_dir():
        return removed
    for mark in (STAGING_MARK, REPLACED_MARK):
        for leftover in dest.parent.glob(f".{dest.name}{mark}*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


@contextlib.contextmanager
def staging_directory(dest: str | os.PathLike) -> Iterator[Path]:
    """An empty folder beside ``dest`` (same filesystem) to build it in; removed afterwards
    unless it was published (``publish_directory(staged, dest)``)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(dest)
    staged = _sibling(dest, STAGING_MARK)
    staged.mkdir()
    try:
        yield staged
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(Path(folder))


def fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
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


def _same_filesystem(source: Path, dest_parent: Path) -> bool:
    return os.stat(source).st_dev == os.stat(dest_parent).st_dev


def _copy_beside(source: Path, dest: Path) -> Path:
    """A complete, fsynced copy of ``source`` beside ``dest`` (on ``dest``'s filesystem)."""
    staged = _sibling(dest, STAGING_MARK)
    try:
        shutil.copytree(source, staged, symlinks=True)
        _fsync_tree(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _swap_in(new: Path, dest: Path) -> None:
    """Put the folder ``new`` (on ``dest``'s filesystem) at ``dest``; the old one is deleted
    only after the new one is in place."""
    if not (dest.exists() or dest.is_symlink()):
        os.rename(new, dest)
        fsync_directory(dest.parent)
        return
    if _exchange(new, dest):
        replaced = new                          # the old folder now sits at the new one's name
    else:
        replaced = _sibling(dest, REPLACED_MARK)
        os.rename(dest, replaced)
        os.rename(new, dest)
    fsync_directory(dest.parent)
    if replaced.is_dir() and not replaced.is_symlink():
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        replaced.unlink(missing_ok=True)


def publish_directory(source: str | os.PathLike, dest: str | os.PathLike, *,
                      keep_source: bool = False) -> Path:
    """Make the finished folder ``source`` appear at ``dest``, replacing what is there.

    ``dest`` always holds either the old folder or the complete new one, and the old one is
    deleted only after the new one is in place. On one filesystem ``source`` is swapped in by
    rename (atomically where Linux's ``renameat2`` can exchange the two). From another
    filesystem (a scratch disk, shards on a mounted volume) it is first copied beside ``dest``
    and fsynced, then swapped in, and ``source`` is deleted only after that. With
    ``keep_source`` it is always copied, and ``source`` stays.
    """
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise FileNotFoundError(f"cannot publish {source}: not a folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not keep_source and _same_filesystem(source, dest.parent):
        try:
            _swap_in(source, dest)
            remove_leftovers(dest)
            return dest
        except OSError as error:
            if error.errno != errno.EXDEV:     # e.g. two bind mounts of one device
                raise
    staged = _copy_beside(source, dest)
    _swap_in(staged, dest)
    if not keep_source:
        shutil.rmtree(source, ignore_errors=True)
    remove_leftovers(dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Saved model folders that are the same bytes everywhere

# What transformers and diffusers write into every saved config besides the model itself: the
# installed library version and the path a model was loaded from. Neither changes the model, but
# both change its bytes (and so DVC's hashes and dvc.lock) between machines, clones and library
# versions; loading works without them.
LIBRARY_FIELDS = ("transformers_version", "_diffusers_version", "_name_or_path")


def strip_library_fields(folder: str | os.PathLike) -> list[Path]:
    """Remove LIBRARY_FIELDS from every JSON config under ``folder``; return the files changed."""
    changed = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(config, dict) and any(field in config for field in LIBRARY_FIELDS):
            for field in LIBRARY_FIELDS:
                config.pop(field, None)
            write_json(path, config)
            changed.append(path)
    return changed


def folder_digest(folder: str | os.PathLike) -> str:
    """sha256 over every file under ``folder`` (relative path and content), in path order: what
    identifies a folder's content, e.g. a trained model a run must not mix with another."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
