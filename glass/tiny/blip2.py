"""A tiny random-weight BLIP-2 (ViT + Q-Former + OPT) that loads through ``from_pretrained``.

The folder written by :func:`build_tiny_blip2` has the same layout as a hub checkpoint such as
``Salesforce/blip2-opt-2.7b`` (config, safetensors weights, generation config, image processor,
byte-level BPE tokenizer with OPT's special tokens, processor config with ``num_query_tokens``),
so the captioning code is exercised on CPU exactly as it runs with the real model. The captions
it produces are meaningless: the weights are random.

Command line: ``python -m glass.tiny.blip2 OUT_DIR [--seed N]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    PreTrainedTokenizerFast,
)

from glass.io import strip_library_fields
from glass.tiny.cli import run_builder_cli

IMAGE_SIZE = 32
PATCH_SIZE = 8
NUM_QUERY_TOKENS = 4
# Upper bound (256 byte symbols + 4 specials + merges); the small corpus stops at 466 tokens.
BPE_VOCAB_SIZE = 512

# OPT's special-token layout: ids 0-3, and "</s>" doubles as BOS and EOS.
OPT_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
BOS_EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
# Blip2Processor puts num_query_tokens of these in front of the text; the model swaps in the
# Q-Former outputs there.
IMAGE_TOKEN = "<image>"
# Output tokens the tiny model may produce: lowercase word pieces, optionally space-led.
WORD_PIECE = re.compile(r" ?[a-z]+")

# A small built-in caption corpus so the tokenizer learns English-ish merges deterministically.
CAPTION_CORPUS = """\
a man riding a bike down a city street next to parked cars
a woman holding an umbrella while walking in the rain
two dogs playing with a frisbee on a green field
a cat sitting on top of a wooden table next to a laptop
a plate of food with broccoli carrots and rice
a group of people standing around a kitchen counter
a red double decker bus driving down the road
a herd of zebras grazing in a grassy field
a giraffe standing next to a tall tree at the zoo
a young boy swinging a baseball bat at a ball
a person on a surfboard riding a large wave in the ocean
an airplane flying through a clear blue sky
a bowl of fruit with apples bananas and oranges
a living room with a couch a chair and a television
a bathroom with a white toilet and a sink
a teddy bear sitting on a bed with pillows
a pizza with cheese and pepperoni on a pan
a train traveling down the tracks near a station
a sheep standing in a field of tall grass
a horse pulling a cart down a dirt road
a boat floating on a calm lake near the mountains
a man skiing down a snowy slope
a girl flying a kite on a sandy beach
a clock tower in the middle of a town square
a stop sign on the corner of a quiet street
an elephant walking through the dusty savanna
a bird perched on a branch of a small tree
a couple of people sitting on a bench in the park
a skateboarder doing a trick on a ramp
a refrigerator and an oven in a small kitchen
a vase of flowers on a window sill
a laptop keyboard and a mouse on a desk
a cow standing in the middle of a muddy field
a bear walking along the edge of a river
a close up of a sandwich cut in half
a cake with candles on a birthday table
a tennis player hitting a ball with a racket
a fire hydrant on the side of a snowy road
a motorcycle parked in front of a brick building
a traffic light hanging over an empty intersection
a black and white photo of a person holding a cup of coffee
a pair of scissors next to a book on the table
a cell phone lying on a wooden desk beside a remote
a dog sleeping on a couch in a sunny room
a child eating a donut at a table outside
a truck carrying wood down a highway
a person riding a snowboard down a mountain
a suitcase and a backpack by the door
"""


def build_tiny_blip2(out_dir: str | Path, seed: int = 0) -> Path:
    """Build a random-weight tiny BLIP-2 and its processor, save both to ``out_dir``, return it.

    The same ``seed`` always gives byte-identical ``model.safetensors``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor = build_tiny_processor()
    config = tiny_blip2_config(processor.tokenizer)
    model = init_tiny_model(config, seed)
    restrict_output_to_words(model, processor.tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    write_readme(out_dir, config, seed)
    strip_library_fields(out_dir)   # the same bytes whatever the library versions
    return out_dir


def build_tiny_processor() -> Blip2Processor:
    """The image processor at the tiny image size plus the tiny tokenizer."""
    image_processor = BlipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )
    return Blip2Processor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        num_query_tokens=NUM_QUERY_TOKENS,
    )


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with OPT's conventions (BOS ``</s>`` prepended, pad ``<pad>``).

    Built with the ``tokenizers`` library and wrapped as a fast tokenizer object, because the
    slow-tokenizer file constructors of transformers 5 can silently ignore their files.
    """
    backend = train_byte_level_bpe(CAPTION_CORPUS.splitlines())
    # The image placeholder is part of the saved vocabulary, so the model's vocab size is fixed
    # at build time and Blip2Processor's own "add <image> if missing" step is a no-op.
    backend.add_special_tokens([AddedToken(IMAGE_TOKEN, normalized=False, special=True)])
    bos_id = backend.token_to_id(BOS_EOS_TOKEN)
    # Like OPT's tokenizer, prepend BOS to every encoded text.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_EOS_TOKEN}:0 $A:0",
        pair=f"{BOS_EOS_TOKEN}:0 $A:0 {BOS_EOS_TOKEN}:1 $B:1",
        special_tokens=[(BOS_EOS_TOKEN, bos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_EOS_TOKEN,
        eos_token=BOS_EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        # Decoder-only generation needs prompts aligned at the right edge.
        padding_side="left",
        model_max_length=512,
    )


def train_byte_level_bpe(lines: list[str]) -> Tokenizer:
    """Train a GPT-2/OPT style byte-level BPE (no prefix space) on ``lines``."""
    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(OPT_SPECIAL_TOKENS),
        # All 256 byte symbols, so any text (not only the corpus) can be encoded.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer=trainer)
    return backend


def tiny_blip2_config(tokenizer: PreTrainedTokenizerFast) -> Blip2Config:
    """A few-hundred-KB BLIP-2 whose OPT vocabulary matches ``tokenizer`` exactly."""
    vision_config = {
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        # The BLIP-2 vision default (1e-10) would make every image embed alike.
        "initializer_range": 0.02,
    }
    qformer_config = {
        "vocab_size": 64,  # Only used with text input to the Q-Former, which captioning never has.
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "cross_attention_frequency": 1,
    }
    text_config = {
        "model_type": "opt",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "word_embed_proj_dim": 32,
        "ffn_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 128,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        # Untied: with a random tied head the model echoes its last input token, and since OPT's
        # BOS is also EOS every greedy caption would end at once, empty.
        "tie_word_embeddings": False,
    }
    return Blip2Config(
        vision_config=vision_config,
        qformer_config=qformer_config,
        text_config=text_config,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_text_hidden_size=32,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )


def init_tiny_model(config: Blip2Config, seed: int) -> Blip2ForConditionalGeneration:
    """Random weights drawn from the seeded global torch RNG, restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Blip2ForConditionalGeneration(config)
    return model.eval()


def restrict_output_to_words(
    model: Blip2ForConditionalGeneration, tokenizer: PreTrainedTokenizerFast
) -> None:
    """Zero the output-head rows of every token but word pieces and EOS.

    Those tokens then always score exactly 0 while the ~230 kept ones score random values, some
    of them positive, so greedy or beam decoding never picks a raw byte: the random captions
    read as lowercase word salad (no control characters or broken UTF-8) that the downstream
    text stages can handle like real captions.
    """
    keep = [
        token_id
        for token_id in range(len(tokenizer))
        if token_id == tokenizer.eos_token_id
        or WORD_PIECE.fullmatch(tokenizer.decode([token_id]))
    ]
    head = model.get_output_embeddings().weight
    mask = torch.zeros(head.shape[0], 1, dtype=head.dtype)
    mask[keep] = 1.0
    with torch.no_grad():
        head.mul_(mask)


def write_readme(out_dir: Path, config: Blip2Config, seed: int) -> None:
    """Say plainly that the folder is a random-weight test model, not a captioner."""
    vision, qformer, text = config.vision_config, config.qformer_config, config.text_config
    readme = (
        "# Tiny random-weight BLIP-2\n\n"
        "Built by `glass.tiny.blip2.build_tiny_blip2` for CPU runs and tests.\n"
        f"The weights are RANDOM (torch seed {seed}); its captions are meaningless.\n"
        "Do not use it for real results.\n\n"
        f"- vision: image {IMAGE_SIZE}px, patch {PATCH_SIZE}, hidden {vision.hidden_size}, "
        f"{vision.num_hidden_layers} layers\n"
        f"- Q-Former: hidden {qformer.hidden_size}, {qformer.num_hidden_layers} layers, "
        f"{config.num_query_tokens} query tokens\n"
        f"- OPT: hidden {text.hidden_size}, {text.num_hidden_layers} layers, "
        f"vocab {text.vocab_size}\n\n"
        "The untied output head scores only lowercase word pieces and EOS (all other rows are\n"
        "zero), so captions are printable word salad.\n"
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    run_builder_cli(build_tiny_blip2, "BLIP-2", argv)


if __name__ == "__main__":
    main()
