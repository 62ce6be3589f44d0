"""Which token positions belong to which class in the separately encoded class text.

Following Dataset Diffusion (docs/paper-facts.md, "Pseudo masks"), the class part of a prompt — the
class names joined by spaces, e.g. "person hot dog" — is encoded on its own with the pipeline's
tokenizer and text encoder; its embeddings give the keys of the class cross-attention maps.
A class may span several tokens: several words ("hot dog", "teddy bear") or several sub-word
pieces of one word. Every one of its positions is kept and their maps are averaged later. DD
assumed one token per word and took only the first word of compound names: both bugs are
avoided here by locating each class's tokens and checking them by decoding.
"""

from __future__ import annotations

import re

import torch
from glass.errors import InvalidInput


def class_text(classes: list[str]) -> str:
    """The class part of the prompt as DD writes it: class names joined by spaces."""
    return " ".join(classes)


def class_token_groups(tokenizer, classes: list[str]) -> list[list[int]]:
    """For each class, its token positions in the tokenized class text (BOS at position 0).

    Raises ValueError when the class text (with its start and end tokens) does not fit the
    tokenizer's maximum length, or when the tokens cannot be attributed to the classes.
    """
    text = class_text(classes)
    # verbose=False: the over-long case is reported below, not as a tokenizer warning
    with_specials = tokenizer(text, add_special_tokens=True, verbose=False).input_ids
    max_length = tokenizer.model_max_length
    if len(with_specials) > max_length:
        raise InvalidInput(
            f"the class text {text!r} is {len(with_specials)} tokens long (start and end tokens "
            f"included), more than the tokenizer's {max_length}: classes {classes} cannot all "
            "get cross-attention maps; drop some classes from this prompt")
    body = tokenizer(text, add_special_tokens=False).input_ids
    offset = _find_subsequence(with_specials, body)
    groups: list[list[int]] = []
    start = 0
    for count in range(1, len(classes) + 1):
        prefix = tokenizer(class_text(classes[:count]), add_special_tokens=False).input_ids
        # Attribution by prefixes holds for word-level pre-tokenisers like CLIP's (a word's tokens
        # never depend on the next word); the checks below catch a tokenizer where it does not.
        if body[:len(prefix)] != prefix or len(prefix) <= start:
            raise InvalidInput(f"cannot attribute the tokens of {text!r} to the classes {classes}: "
                             "the tokenizer merges tokens across class names")
        check_group_decodes_to(tokenizer, body[start:len(prefix)], classes[count - 1])
        groups.append(list(range(offset + start, offset + len(prefix))))
        start = len(prefix)
    if start != len(body):
        raise InvalidInput(f"tokens of {text!r} left over after the classes {classes}")
    return groups


def check_group_decodes_to(tokenizer, token_ids: list[int], class_name: str) -> None:
    """The tokens of a class must decode back to its name (ignoring whitespace and case)."""
    decoded = tokenizer.decode(token_ids)
    if _squash(decoded) != _squash(class_name):
        raise InvalidInput(f"the tokens {token_ids} attributed to class {class_name!r} decode to "
                         f"{decoded!r}")


def encode_class_texts(pipeline, classes_per_sample: list[list[str]],
                       device: torch.device | str) -> torch.Tensor:
    """(B, max_length, D) text-encoder embeddings of each sample's class text.

    Uses the pipeline's own ``encode_prompt`` (same tokenizer, padding to the maximum length,
    text encoder and clip-skip setting as the prompts), without classifier-free guidance.
    """
    texts = [class_text(classes) for classes in classes_per_sample]
    with torch.no_grad():
        embeddings, _ = pipeline.encode_prompt(texts, device, 1, False)
    return embeddings


def _find_subsequence(sequence: list[int], part: list[int]) -> int:
    for start in range(len(sequence) - len(part) + 1):
        if sequence[start:start + len(part)] == part:
            return start
    raise InvalidInput("the tokenizer's special tokens change the text's own tokens")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()
