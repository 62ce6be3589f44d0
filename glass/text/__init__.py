"""Caption text processing: which COCO classes a caption mentions."""

from glass.text.classes import extract_classes

__all__ = ["extract_classes"]
