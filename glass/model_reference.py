"""Reading what the models stage wrote: the string to hand to ``from_pretrained``.

Kept apart from ``glass.models`` (which imports every tiny-model builder) so that a stage using one
model does not import, and depend on, the code that builds the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from glass.errors import InvalidInput, MissingInput
from glass.io import folder_digest

REFERENCE_FILE = "glass-model.json"


def model_reference(model_dir: str | Path) -> str:
    """The ``from_pretrained`` string for the model folder ``model_dir``: a hub id, or the
    absolute path of a tiny model or of a local folder given as ``models.<role>.id`` (absolute,
    so that Ray workers with another working directory find it too)."""
    model_dir = Path(model_dir)
    path = model_dir / REFERENCE_FILE
    if not path.is_file():
        raise MissingInput(f"{path} not found: run the models stage first (dvc repro)")
    reference = json.loads(path.read_text())
    if reference["source"] in ("tiny", "local"):
        # "local": relative to the models folder inside the repository, else absolute
        return str((model_dir / reference["path"]).resolve())
    if reference["source"] == "hub":
        return reference["id"]
    raise InvalidInput(f"{path}: unknown model source {reference['source']!r}; rerun the models "
                       "stage (dvc repro)")


REPOSITORY_MARKERS = (".dvc", ".git")


def repository_root(path: str | Path) -> Path | None:
    """The nearest folder at or above ``path`` holding ``.dvc`` or ``.git``, or None."""
    current = Path(os.path.abspath(path))
    for folder in (current, *current.parents):
        if any((folder / marker).exists() for marker in REPOSITORY_MARKERS):
            return folder
    return None


def portable_path(target: str | Path, base_dir: str | Path) -> str:
    """How a folder that stores a path to ``target`` (a model it builds on) writes it: relative to
    ``base_dir`` when both lie in the same repository, so the reference holds in any clone at
    any depth and after a DVC pull; absolute otherwise (a folder outside the repository is not
    moved with it)."""
    target, base = Path(os.path.abspath(target)), Path(os.path.abspath(base_dir))
    root = repository_root(base)
    if root is not None and target.is_relative_to(root):
        return os.path.relpath(target, base)
    return str(target)


def portable_model_name(reference: str) -> str:
    """How shards, manifests and fingerprints name a model: a local folder inside a repository by
    its path from the repository root (``models/toy/stable_diffusion``), so that the same model
    gives the same bytes in any clone; a hub id, or a folder outside any repository, as it is."""
    if not Path(reference).is_dir():
        return reference
    folder = Path(os.path.abspath(reference))
    root = repository_root(folder)
    return folder.relative_to(root).as_posix() if root is not None else str(folder)


def model_contents(models: dict[str, str]) -> dict[str, str]:
    """Per role, the digest of a local model folder's files (or the ref itself when it is not a
    local folder): what tells shards and runs of one set of weights from those of another, which
    a folder's path cannot (a retrained model keeps its path)."""
    return {role: folder_digest(ref) if Path(ref).is_dir() else ref
            for role, ref in sorted(models.items())}


def is_local_folder(reference: str) -> bool:
    """A model given as a folder (existing, or written as a path) rather than a hub id."""
    return looks_like_path(reference) or Path(reference).expanduser().exists()


def hub_offline() -> bool:
    """Whether this process may not download from the Hugging Face hub (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_model_cached(repo_id: str) -> bool:
    """Whether a snapshot of ``repo_id`` is in the local Hugging Face cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        return False
    return True


def download_advice(repo_id: str) -> str:
    return (f"on a machine with internet run `hf download {repo_id}` and copy the Hugging Face "
            "cache here (HF_HOME), or point the param at a local folder holding the model")


def looks_like_path(reference: str) -> bool:
    """A folder rather than a hub id ("namespace/name"): absolute, relative (./, ../, ~) or with
    more than one slash."""
    return (Path(reference).is_absolute() or reference.startswith((".", "~"))
            or reference.count("/") > 1)


def model_problem(reference: str, what: str) -> str | None:
    """Why the model ``reference`` (a local folder or a hub id) cannot be loaded here, or None:
    a local folder must exist; a hub id must be cached when the hub is offline."""
    path = Path(reference)
    if looks_like_path(reference) or path.exists():
        if not path.is_dir():
            return f"{what}: folder {reference} is missing: rerun the models stage (dvc repro)"
        return None
    if hub_offline() and not hub_model_cached(reference):
        return (f"{what}: weights of {reference!r} are not in the Hugging Face cache and the hub "
                f"is offline (HF_HUB_OFFLINE=1): {download_advice(reference)}")
    return None


# ---------------------------------------------------------------------------------------------
# Why a model did not load

def damaged_weight_files(folder: str | Path) -> list[tuple[Path, str]]:
    """(file, reason) of every weights file under ``folder`` that cannot be opened: a
    safetensors file whose header does not cover the file (truncated, e.g. by a full disk or an
    interrupted copy), or a torch checkpoint that is not a complete archive."""
    from safetensors import SafetensorError, safe_open

    damaged = []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as handle:
                    handle.keys()
            except (SafetensorError, OSError) as error:
                damaged.append((path, str(error)))
        elif path.suffix in (".pt", ".pth", ".bin") and _damaged_torch_file(path):
            damaged.append((path, "not a complete torch checkpoint"))
    return damaged


def _damaged_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (a cut one has lost its central directory, so it is no
    longer a zip) or, in the legacy format, a pickle (which starts with the PROTO opcode)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as handle:
        return handle.read(1) != b"\x80"


def _hub_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:   # noqa: BLE001 - not cached, or not a valid id: nothing to inspect
        return None


def load_failure(what: str, reference: str, error: BaseException, *,
                 rebuild: str = "rerun the models stage (`dvc repro -f -s models` for this "
                                "configuration's dvc.yaml)") -> MissingInput:
    """The error to raise when ``from_pretrained(reference)`` failed with ``error``: it names a
    damaged weights file and how to replace it, a folder that is incomplete, or a hub model that
    is not available, each with the fix. ``rebuild`` says how the folder is made again."""
    path = Path(reference)
    local = path.is_dir()
    cause = f"{type(error).__name__}: {' '.join(str(error).split())}"   # on one line
    if not local and looks_like_path(reference):
        return MissingInput(f"{what}: the model folder {reference} does not exist. Fix: {rebuild}, "
                            "or point the param at the folder")
    folder = path if local else _hub_snapshot(reference)
    damaged = damaged_weight_files(folder) if folder is not None else []
    if damaged:
        file, reason = damaged[0]
        fix = rebuild if local else f"download it again: `hf download {reference}`"
        return MissingInput(f"{what}: weights file {file} is truncated or corrupt ({reason}); "
                            f"the model in {folder} cannot be loaded. Fix: {fix}")
    if local:
        return MissingInput(f"{what}: the model folder {reference} could not be loaded "
                            f"({cause}); it is incomplete or not a model of this kind. Fix: "
                            f"{rebuild}")
    return MissingInput(f"{what} {reference!r} could not be loaded ({cause}). It is neither a "
                        f"local folder nor complete in the Hugging Face cache here. Fix: "
                        f"{download_advice(reference)}")


def load_errors() -> tuple[type[BaseException], ...]:
    """What from_pretrained raises for a missing, incomplete or damaged model (as opposed to a
    bug, which is left to propagate with its traceback)."""
    from huggingface_hub.errors import HFValidationError
    from safetensors import SafetensorError

    return (OSError, ValueError, SafetensorError, HFValidationError, EOFError)


TRAINED_FOLDER_REBUILD = ("rerun the train stage that wrote it (`dvc repro -f -s train_phase1` "
                          "or `train_phase2` with this configuration's dvc.yaml)")


def load_pretrained(model_class, folder: str | Path, what: str, *,
                    rebuild: str = TRAINED_FOLDER_REBUILD, **kwargs):
    """``model_class.from_pretrained(folder, **kwargs)``, failing with ``load_failure``'s
    message (naming a damaged weights file and ``rebuild``) instead of a raw loader error."""
    try:
        return model_class.from_pretrained(folder, **kwargs)
    except load_errors() as error:
        raise load_failure(what, str(folder), error, rebuild=rebuild) from error
