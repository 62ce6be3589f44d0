"""Loading SAM 2 (used for Objects365's box-prompted masks and the SAM 2 pseudo-mask option):
one loader for hub releases and local folders, the tiny model of ``glass.tiny.sam2`` included.

:func:`load_sam2` loads either a hub id (``facebook/sam2.1-hiera-large``, via sam2's
``build_sam2_hf``) or a local folder holding one config and one checkpoint (via sam2's
``build_sam2``). Only torch is imported at the top (sam2 itself lazily), so importing this module
is cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from glass.errors import MissingInput
from glass.model_reference import load_failure

# the file names glass.tiny.sam2 writes (any single *.yaml / *.pt pair loads)
CONFIG_NAME = "sam2_tiny.yaml"
CHECKPOINT_NAME = "sam2_tiny.pt"


def load_sam2(model: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A SAM 2 model (``SAM2Base``, eval mode) from a hub id or a local folder.

    Hub ids go through sam2's ``build_sam2_hf`` (the config sam2 pairs with that id); a folder
    must hold exactly one ``*.yaml`` config and one ``*.pt`` checkpoint and goes through
    ``build_sam2``. Both apply sam2's standard mask post-processing overrides. A model that
    cannot be loaded here raises RuntimeError saying how to get it; there is no fallback.
    """
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES, build_sam2, build_sam2_hf

    device = str(device)
    folder = Path(model)
    if folder.is_dir():
        config_file, checkpoint = model_files(folder)
        try:
            with hydra_config_dir(folder):
                return build_sam2(config_file.name, str(checkpoint), device=device)
        except (RuntimeError, OSError, EOFError, KeyError) as error:
            # torch.load of a cut checkpoint raises RuntimeError ("failed finding central
            # directory"); a checkpoint without a "model" entry raises KeyError
            raise load_failure("SAM 2", str(folder), error) from error
    if folder.exists() or model.startswith((".", "/", "~")):
        raise MissingInput(f"SAM 2 model {model!r} is not a folder (expected a folder with one "
                           "*.yaml config and one *.pt checkpoint, or a hub id)")
    if model not in HF_MODEL_ID_TO_FILENAMES:
        raise MissingInput(f"SAM 2 model {model!r} is neither a local folder nor a hub id sam2 "
                           f"knows (known: {', '.join(sorted(HF_MODEL_ID_TO_FILENAMES))})")
    try:
        return build_sam2_hf(model, device=device)
    except OSError as error:   # offline / not cached / no network: huggingface_hub's errors
        raise MissingInput(unavailable_model_message(model, error)) from error


def model_files(folder: Path) -> tuple[Path, Path]:
    """The single config and single checkpoint of a local model folder."""
    configs, checkpoints = sorted(folder.glob("*.yaml")), sorted(folder.glob("*.pt"))
    if len(configs) != 1 or len(checkpoints) != 1:
        raise MissingInput(
            f"SAM 2 folder {str(folder)!r} must hold exactly one *.yaml config and one *.pt "
            f"checkpoint, found {[p.name for p in configs]} and {[p.name for p in checkpoints]}")
    return configs[0], checkpoints[0]


def unavailable_model_message(model_id: str, error: Exception) -> str:
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    config_name, checkpoint_name = HF_MODEL_ID_TO_FILENAMES[model_id]
    return (
        f"SAM 2 model {model_id!r} could not be loaded ({type(error).__name__}: {error}). Its "
        f"checkpoint {checkpoint_name} is not in the Hugging Face cache and this run cannot "
        f"download it. Fix: on a machine with internet run `hf download {model_id} "
        f"{checkpoint_name}` and copy the cache here, or put that checkpoint and a copy of "
        f"sam2's {config_name} in a folder and set the SAM 2 model parameter to the folder."
    )


@contextmanager
def hydra_config_dir(folder: Path) -> Iterator[None]:
    """Let sam2's ``compose()`` find configs in ``folder`` only, then restore sam2's search path.

    ``build_sam2`` composes from hydra's global search path, which ``import sam2`` points at the
    package's configs. Hydra refuses to re-initialise while that is set, so it is parked.
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import sam2  # noqa: F401  (make sure sam2 has set its search path before it is parked)

    parked = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folder.resolve()), version_base="1.2"):
            yield
    finally:
        GlobalHydra.instance().clear()
        GlobalHydra.instance().hydra = parked
