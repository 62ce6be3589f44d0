"""A tiny random-weight Stable Diffusion that ``StableDiffusionPipeline.from_pretrained`` loads.

The folder written by :func:`build_tiny_stable_diffusion` has the layout of a hub checkpoint such as
``stabilityai/stable-diffusion-2-1-base`` (model_index.json; unet/, vae/, text_encoder/,
tokenizer/, scheduler/ subfolders; safetensors weights; no safety checker), so the synthesis code
runs on CPU exactly as it does with the real model. Its images and attention are meaningless: the
weights are random.

Sizes (chosen so every UNet level has self- and cross-attention, like SD 2.1's 64/32/16 levels):

- images 64 px; VAE with 3 blocks → scale factor 4 → 16×16 latents;
- UNet levels 16, 8, 4 (CrossAttnDown/UpBlock2D everywhere, plus the cross-attention mid block);
- CLIP text encoder: hidden 32, 2 layers, 77 positions (SD's prompt length);
- CLIP BPE tokenizer trained on a small caption corpus plus the COCO class words: common words
  are single tokens, multi-word classes ("hot dog") are several tokens, and the words in
  ``SUBWORD_SPLIT_WORDS`` are kept out of the corpus so they split into several sub-word tokens.

Command line: ``python -m glass.tiny.stable_diffusion OUT_DIR [--seed N]``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from glass.data.classes import COCO_CLASSES
from glass.io import strip_library_fields
from glass.tiny.blip2 import CAPTION_CORPUS
from glass.tiny.cli import run_builder_cli

IMAGE_SIZE = 64
LATENT_CHANNELS = 4
VAE_CHANNELS = (16, 32, 32)            # 3 blocks → vae_scale_factor 2**(3-1) = 4
UNET_CHANNELS = (32, 64, 64)           # levels 16, 8, 4 on a 16×16 latent
UNET_HEADS = (2, 4, 4)                 # head dim 16 everywhere
TEXT_HIDDEN = 32
MAX_TEXT_TOKENS = 77                   # CLIP's (and SD's) prompt length

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# Single-word COCO classes that must split into sub-word tokens (never seen whole by the BPE
# trainer), so the multi-token class handling is exercised even for one-word names.
SUBWORD_SPLIT_WORDS = ("refrigerator", "broccoli", "toothbrush")
# Words of the template captioner (supplement Table 13), of SD negative prompts, and other
# frequent caption words, so that typical prompts are mostly whole-word tokens.
EXTRA_WORDS = (
    "a high quality image of photo blurry low resolution cartoon drawing and with "
    "bunch about to surf there is are some several many three four small large big white "
    "black blue green brown yellow sitting standing looking holding eating playing"
)
# CLIP's pre-tokenizer pattern (as in transformers' CLIPTokenizer): special tokens, English
# contractions, letter runs, single digits, punctuation runs.
CLIP_SPLIT_PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|"""
                      r"""[\p{N}]|[^\s\p{L}\p{N}]+""")


def build_tiny_stable_diffusion(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the random-weight tiny SD pipeline, save it to ``out_dir`` and return the path.

    The same ``seed`` always gives byte-identical files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(tiny_text_config(tokenizer)).eval()
        vae = AutoencoderKL(**tiny_vae_config()).eval()
        unet = UNet2DConditionModel(**tiny_unet_config()).eval()
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(**sd21_base_scheduler_config()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    write_readme(out_dir, seed, len(tokenizer))
    strip_library_fields(out_dir)   # the same bytes whatever the library versions
    return out_dir


# ---------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_corpus() -> list[str]:
    """Caption lines plus every COCO class name, with the sub-word-split words removed."""
    lines = CAPTION_CORPUS.splitlines() + [EXTRA_WORDS] + list(COCO_CLASSES)
    banned = re.compile(r"\b(" + "|".join(SUBWORD_SPLIT_WORDS) + r")\b")
    return [banned.sub(" ", line) for line in lines]


def clip_pre_tokenizer() -> Tokenizer:
    """CLIP's normaliser and pre-tokeniser (as in transformers' CLIPTokenizer) on an empty BPE."""
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    return backend


def train_clip_bpe(lines: list[str]) -> list[tuple[str, str]]:
    """CLIP-style BPE merges (``</w>`` marks a word's last symbol), learned until every corpus
    word is a single symbol.

    A plain Python trainer rather than ``tokenizers``' BpeTrainer, whose tie-breaking between
    equally frequent pairs differs from process to process (the files would not be
    byte-identical). Here ties go to the lexicographically smallest pair.
    """
    backend = clip_pre_tokenizer()
    word_counts: Counter[str] = Counter()
    for line in lines:
        normalized = backend.normalizer.normalize_str(line)
        word_counts.update(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
    words = {tuple(word[:-1]) + (word[-1] + "</w>",): count for word, count in word_counts.items()}
    merges: list[tuple[str, str]] = []
    while True:
        pair_counts: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            return merges
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        words = {merge_pair(symbols, best): count for symbols, count in words.items()}


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """``symbols`` with every adjacent occurrence of ``pair`` fused, left to right."""
    out: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            out.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            out.append(symbols[index])
            index += 1
    return tuple(out)


def build_tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer laid out like OpenAI's: 256 byte symbols, the same with ``</w>``,
    the merged symbols in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``.

    Built from ``vocab``/``merges`` objects: transformers 5's ``CLIPTokenizer(vocab_file=...)``
    silently ignores its files.
    """
    merges = train_clip_bpe(tokenizer_corpus())
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = [left + right for left, right in merges]
    symbols = alphabet + [char + "</w>" for char in alphabet] + merged + [BOS_TOKEN, EOS_TOKEN]
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(merges),
                         model_max_length=MAX_TEXT_TOKENS)


# ---------------------------------------------------------------------------------------------
# Model configs


def tiny_text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TEXT_TOKENS,
        projection_dim=TEXT_HIDDEN,
        hidden_act="gelu",             # SD 2.x's OpenCLIP text tower uses GELU
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_vae_config() -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(VAE_CHANNELS),
        "up_block_types": ["UpDecoderBlock2D"] * len(VAE_CHANNELS),
        "block_out_channels": list(VAE_CHANNELS),
        "layers_per_block": 1,
        "latent_channels": LATENT_CHANNELS,
        "norm_num_groups": 8,
        "sample_size": IMAGE_SIZE,
        "scaling_factor": 0.18215,     # SD's latent scaling
    }


def tiny_unet_config() -> dict:
    latent_size = IMAGE_SIZE // 2 ** (len(VAE_CHANNELS) - 1)
    return {
        "sample_size": latent_size,
        "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS,
        "down_block_types": ["CrossAttnDownBlock2D"] * len(UNET_CHANNELS),
        "up_block_types": ["CrossAttnUpBlock2D"] * len(UNET_CHANNELS),
        "block_out_channels": list(UNET_CHANNELS),
        "layers_per_block": 1,
        "cross_attention_dim": TEXT_HIDDEN,
        # diffusers' historical misnomer: for this UNet "attention_head_dim" is the number of
        # heads per level (SD 2.1 sets it to (5, 10, 20, 20)).
        "attention_head_dim": list(UNET_HEADS),
        "norm_num_groups": 8,
        "use_linear_projection": True,  # as SD 2.x
    }


def sd21_base_scheduler_config() -> dict:
    """The scheduler settings of stabilityai/stable-diffusion-2-1-base (PNDM, epsilon)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    }


def write_readme(out_dir: Path, seed: int, vocab_size: int) -> None:
    """Say plainly that the folder is a random-weight test model, not an image generator."""
    latent = IMAGE_SIZE // 2 ** (len(VAE_CHANNELS) - 1)
    levels = ", ".join(str(latent // 2**level) for level in range(len(UNET_CHANNELS)))
    readme = (
        "# Tiny random-weight Stable Diffusion\n\n"
        "Built by `glass.tiny.stable_diffusion.build_tiny_stable_diffusion` for CPU runs and "
        "tests.\n"
        f"The weights are RANDOM (torch seed {seed}); its images and attention maps are "
        "meaningless.\nDo not use it for real results.\n\n"
        f"- images {IMAGE_SIZE} px, VAE channels {VAE_CHANNELS} (scale factor "
        f"{2 ** (len(VAE_CHANNELS) - 1)}), latent {latent}x{latent}\n"
        f"- UNet channels {UNET_CHANNELS}, heads {UNET_HEADS}, attention levels {levels}, "
        f"cross_attention_dim {TEXT_HIDDEN}\n"
        f"- CLIP text encoder: hidden {TEXT_HIDDEN}, 2 layers, {MAX_TEXT_TOKENS} positions\n"
        f"- CLIP BPE tokenizer, vocab {vocab_size}: common caption and COCO words are single "
        f"tokens; {', '.join(SUBWORD_SPLIT_WORDS)} split into sub-word tokens\n"
        "- scheduler: PNDM with stable-diffusion-2-1-base's settings; no safety checker\n"
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    run_builder_cli(build_tiny_stable_diffusion, "Stable Diffusion", argv)


if __name__ == "__main__":
    main()
