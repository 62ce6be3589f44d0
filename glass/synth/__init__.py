"""Synthesis: generated images and their pseudo semantic masks from the generator's attention."""

from glass.synth.pseudo_mask import pseudo_mask

__all__ = ["pseudo_mask"]
