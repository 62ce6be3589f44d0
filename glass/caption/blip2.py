"""Image captioning with BLIP-2 (the paper uses ``Salesforce/blip2-opt-2.7b``).

Generation is greedy or beam search, never sampling, so the same images and settings always give
the same captions, and every image gets the same prompt (no per-row padding), so a caption does
not depend on which other images share its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from glass.errors import InvalidInput
from glass.model_reference import load_errors, load_failure
from glass.devices import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)



class Blip2Captioner:
    """Caption PIL images with a BLIP-2 checkpoint (hub id or local folder).

    ``min_length`` is the minimum number of generated caption tokens, not counting the prompt or
    the query tokens (as in LAVIS, where the language model saw only the caption tokens).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "float16",
        batch_size: int = 32,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        min_length: int = 0,
        repetition_penalty: float = 1.0,
        prompt: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = str(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, what="BLIP-2")
        self.batch_size = batch_size
        self.prompt = prompt or None
        self.generate_kwargs = {
            "do_sample": False,
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
            "min_new_tokens": min_length,
            "repetition_penalty": repetition_penalty,
        }
        self.processor, self.model = load_blip2(self.model_id, self.dtype)
        self.model.to(self.device).eval()
        prepare_processor(self.processor, self.model)
        # Fills rows that finished early; set explicitly because the language model's own
        # generation config (the one BLIP-2's generate uses) may lack it and warn every call.
        self.generate_kwargs["pad_token_id"] = self.processor.tokenizer.pad_token_id

    def caption(self, images: Iterable[Image.Image]) -> Iterator[str]:
        """Yield one caption per image, in order, generating ``batch_size`` images at a time."""
        for batch in chunked(images, self.batch_size):
            yield from self.caption_batch(batch)

    def caption_batch(self, images: list[Image.Image]) -> list[str]:
        """Return one stripped caption per image for a single generation batch."""
        if not images:
            return []
        rgb_images = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        inputs = self._encode(rgb_images)
        with torch.inference_mode():
            output_ids = self.model.generate(**inputs, **self.generate_kwargs)
        caption_ids = output_ids[:, self._prefix_length(inputs) :]
        captions = self.processor.batch_decode(caption_ids, skip_special_tokens=True)
        return [caption.strip() for caption in captions]

    def _encode(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """Pixel values (in the model dtype) and, with a prompt, its ids behind the image tokens."""
        text = [self.prompt] * len(images) if self.prompt is not None else None
        inputs = self.processor(images=images, text=text, return_tensors="pt")
        encoded = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        encoded["pixel_values"] = encoded["pixel_values"].to(self.dtype)
        return encoded

    def _prefix_length(self, inputs: dict[str, torch.Tensor]) -> int:
        """How many leading output ids are the input (query placeholders, BOS, prompt).

        BLIP-2's decoder-only generate returns the input ids followed by the new tokens; without
        a prompt it builds the input itself as ``num_query_tokens`` placeholders plus BOS.
        """
        if "input_ids" in inputs:
            return inputs["input_ids"].shape[1]
        return self.model.config.num_query_tokens + 1


def load_blip2(
    model_id: str, dtype: torch.dtype
) -> tuple[Blip2Processor, Blip2ForConditionalGeneration]:
    """Load processor and model, turning 'not available here' into an actionable error."""
    try:
        processor = Blip2Processor.from_pretrained(model_id)
        model = Blip2ForConditionalGeneration.from_pretrained(model_id, dtype=dtype)
    except load_errors() as error:
        raise load_failure("BLIP-2 captioner", model_id, error) from error
    return processor, model


def prepare_processor(processor: Blip2Processor, model: Blip2ForConditionalGeneration) -> None:
    """Make the processor agree with the model before any prompt is encoded."""
    if processor.num_query_tokens is None:
        # Older hub snapshots lack it; the processor would then emit no image placeholders and
        # generate() would silently caption from the prompt alone.
        processor.num_query_tokens = model.config.num_query_tokens
    # Decoder-only generation must continue from the right edge of every row.
    processor.tokenizer.padding_side = "left"


def chunked(items: Iterable[Image.Image], size: int) -> Iterator[list[Image.Image]]:
    """Consecutive lists of ``size`` items (the last one may be shorter)."""
    batch: list[Image.Image] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
