"""Just enough English to write captions from class names: plurals, counts, lists."""

from __future__ import annotations
from glass.errors import InvalidInput

# Irregular or non-"s" plurals among the COCO class names (head noun of multi-word names).
_IRREGULAR_PLURALS = {
    "person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
    "scissors": "scissors", "bus": "buses", "bench": "benches", "couch": "couches",
    "sandwich": "sandwiches", "toothbrush": "toothbrushes", "glass": "glasses", "hot dog": "hot dogs",
    "wine glass": "wine glasses", "tennis racket": "tennis rackets", "giraffe": "giraffes",
}
_COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_UNCOUNTABLE = {"broccoli"}


def plural(name: str) -> str:
    if name in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[name]
    if name in _UNCOUNTABLE:
        return name
    *head, last = name.split(" ")
    if last in _IRREGULAR_PLURALS:
        return " ".join(head + [_IRREGULAR_PLURALS[last]])
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join(head + [last])


def with_article(name: str) -> str:
    if name in _UNCOUNTABLE:
        return f"some {name}"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def count_phrase(count: int, name: str) -> str:
    """``count_phrase(2, "dog") == "two dogs"``, ``count_phrase(1, "apple") == "an apple"``."""
    if count <= 0:
        raise InvalidInput(f"count must be positive, got {count}")
    if count == 1:
        return with_article(name)
    number = _COUNT_WORDS[count] if count < len(_COUNT_WORDS) else str(count)
    return f"{number} {plural(name)}"


def join_list(items: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]
