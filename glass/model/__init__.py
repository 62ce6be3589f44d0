"""The GLASS model (paper Sec. 4, supplement Sec. 2): a frozen DINOv2 encoder, slot attention,
the MLP decoder for instance guidance, Hungarian-matched semantic guidance, and the Stable
Diffusion decoder. ``GlassModel`` puts them together with the paper's loss, is the one reader and
writer of a trained folder (``save_pretrained`` / ``from_pretrained``) and gives slots, slot masks
and generations; ``slot_masks_to_labels``, ``remove_slot`` and ``add_slot`` work on its outputs.

The names are exported lazily, so that importing one module of the package (e.g. slot attention)
does not import, and make a DVC stage depend on, all the others.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GlassModel": "glass.model.glass",
    "LossWeights": "glass.model.glass",
    "Slots": "glass.model.inference",
    "MASK_SOURCES": "glass.model.inference",
    "slot_masks_to_labels": "glass.model.inference",
    "remove_slot": "glass.model.inference",
    "add_slot": "glass.model.inference",
    "read_index": "glass.model.trained_folder",
    "folder_problems": "glass.model.trained_folder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'glass.model' has no attribute {name!r}")
