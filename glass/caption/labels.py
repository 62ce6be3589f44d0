"""Captions from ground-truth labels: the paper's GLASS† variant (Sec. 5), which replaces the
generated caption with the image's ground-truth class labels."""

from __future__ import annotations

from glass.errors import InvalidInput
from glass.caption.english import count_phrase, join_list


def caption_from_labels(classes: list[str], instance_counts: dict[str, int]) -> str:
    """"A photo of two dogs and a cat." from the classes present (most area first).

    Classes whose only regions are crowd annotations have no instance count; they are named
    once, as a plural ("some people") would misstate nothing either way.
    """
    if not classes:
        raise InvalidInput("no ground-truth classes to caption")
    phrases = [count_phrase(max(1, instance_counts.get(name, 0)), name) for name in classes]
    return f"A photo of {join_list(phrases)}."
