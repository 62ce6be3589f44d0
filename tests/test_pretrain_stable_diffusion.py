"""The toy world's own text-to-image latent diffusion model (glass.pretrain.latent_diffusion,
glass.pretrain.stable_diffusion_run) and the committed model it produced."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from glass.data.toy_world import ToyWorldConfig, class_counts, scene_for_image
from glass.pretrain.latent_diffusion import PRETRAIN_SPLIT, render_pool, scene_prompt
from glass.pretrain.params import LatentDiffusionSettings, PretrainParams
from glass.text.prompts import CLASS_SEPARATOR

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "models" / "toy" / "stable_diffusion"


def test_prompts_are_written_as_the_prompts_stage_writes_them():
    world = ToyWorldConfig(image_size=64)
    pool = render_pool(world, seed=3, count=6, progress=False)
    assert pool.images.shape == (6, 3, 64, 64)
    assert -1.0 <= float(pool.images.min()) and float(pool.images.max()) <= 1.0
    for index, prompt in enumerate(pool.prompts):
        scene = scene_for_image(world, 3, PRETRAIN_SPLIT, index)
        caption, classes = prompt.rsplit(CLASS_SEPARATOR, 1)
        assert classes == " ".join(name for name, _ in class_counts(scene))
        assert caption and CLASS_SEPARATOR not in caption
    again = scene_prompt(scene_for_image(world, 3, PRETRAIN_SPLIT, 0), np.random.default_rng([3, 0]))
    assert again == pool.prompts[0]


TINY_SETTINGS = replace(LatentDiffusionSettings(), pool_size=8, vae_steps=2, vae_batch_size=2,
                        unet_steps=2, unet_batch_size=2, warmup_steps=1, sample_prompts=1,
                        sample_steps=1)


def tiny_run(tmp_path: Path, name: str) -> Path:
    from glass.pretrain.stable_diffusion_run import run_stable_diffusion_pretraining

    out = tmp_path / name
    run_stable_diffusion_pretraining(PretrainParams(stable_diffusion=TINY_SETTINGS), 1,
                                     out / "model", out / "m.json", out / "v.tsv", out / "u.tsv",
                                     out / "s.png",
                                     repo=REPO)
    return out


def test_a_short_run_is_deterministic_and_writes_a_pipeline_diffusers_loads(tmp_path):
    from diffusers import StableDiffusionPipeline

    first, second = tiny_run(tmp_path, "a"), tiny_run(tmp_path, "b")
    for part in ("unet", "vae", "text_encoder"):
        a = load_file(first / "model" / part / "diffusion_pytorch_model.safetensors"
                      if part != "text_encoder" else first / "model" / part / "model.safetensors")
        b = load_file(second / "model" / part / "diffusion_pytorch_model.safetensors"
                      if part != "text_encoder" else second / "model" / part / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    pipeline = StableDiffusionPipeline.from_pretrained(first / "model", safety_checker=None)
    assert pipeline.vae_scale_factor == 4
    record = json.loads((first / "model" / "pretraining.json").read_text())
    assert record["params"]["stable_diffusion"]["unet_steps"] == 2
    assert set(record["params"]) == {"world", "stable_diffusion"}
    assert (first / "u.tsv").read_text().splitlines()[0] == "step\tloss"


def committed_bytes(folder: Path) -> int:
    """What ``folder``'s files cost in git: each distinct content once, as git stores a blob
    once however many paths hold it (the further cycles keep their base's VAE and tokenizer
    byte for byte)."""
    import hashlib

    sizes = {hashlib.sha256(path.read_bytes()).hexdigest(): path.stat().st_size
             for path in folder.rglob("*") if path.is_file()}
    return sum(sizes.values())


def test_committed_bytes_count_each_distinct_content_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"12345")
    (tmp_path / "z").write_bytes(b"123")
    assert committed_bytes(tmp_path) == 8


def test_the_committed_tiny_sd_matches_its_params_and_drives_the_synthesis_backend():
    """models/toy/stable_diffusion is what `dvc repro configs/toy-pretrain/dvc.yaml` wrote; its
    record must name the params the graph holds now, and the synthesize stage's backend (attention
    capture, class tokens, refinement) must run on it at the CPU configuration's settings."""
    from glass.params import load_params, read_section, read_seed
    from glass.synth.params import SynthParams
    from glass.synth.stable_diffusion import StableDiffusionGenerator

    record = json.loads((COMMITTED / "pretraining.json").read_text())
    params = load_params(REPO / "configs" / "toy-pretrain" / "params.yaml")
    assert record["params"] == json.loads(json.dumps(
        read_section(params, "pretrain", PretrainParams).record_for("stable_diffusion")))
    assert record["seed"] == read_seed(params)
    assert committed_bytes(REPO / "models" / "toy") < 20 * 2**20
    cpu = read_section(load_params(REPO / "configs" / "cpu" / "params.yaml"), "synth", SynthParams)
    settings = cpu.stable_diffusion
    generator = StableDiffusionGenerator(
        str(COMMITTED), image_size=settings.image_size, steps=2,
        guidance_scale=settings.guidance_scale, negative_prompt=settings.negative_prompt,
        dtype="float32", device="cpu", cross_attention_res=settings.cross_attention_res,
        self_attention_res=settings.self_attention_res,
        vae_scale_factor=settings.vae_scale_factor, tau=settings.tau, low=settings.low,
        high=settings.high)
    sample = generator.generate({"key": "k", "prompt": "A photo of a pizza and a kite.; pizza kite",
                                 "caption": "A photo of a pizza and a kite.",
                                 "classes": ["pizza", "kite"]}, seed=0)
    assert sample.image.shape == (64, 64, 3) and sample.mask.shape == (64, 64)
    assert set(np.unique(sample.mask)) <= {0, 1, 2, 255}


CONTINUED = REPO / "models" / "toy" / "stable_diffusion_continued"


ZERO_SNR = REPO / "models" / "toy" / "stable_diffusion_zero_snr"


@pytest.mark.parametrize("folder, base, sections", [
    (CONTINUED, COMMITTED, ("stable_diffusion", "stable_diffusion_continued")),
    (ZERO_SNR, CONTINUED, ("stable_diffusion", "stable_diffusion_continued",
                           "stable_diffusion_zero_snr"))], ids=["continued", "zero_snr"])
def test_the_committed_further_cycles_match_their_params_and_their_base(folder, base, sections):
    """models/toy/stable_diffusion_continued (stage continue_stable_diffusion) and
    models/toy/stable_diffusion_zero_snr (stage zero_snr_stable_diffusion) are further cycles of
    the committed model before them: each record names the params the graph holds now and the
    base folder's exact content, and each keeps the base's autoencoder byte for byte."""
    from glass.io import folder_digest
    from glass.params import load_params, read_section, read_seed

    record = json.loads((folder / "pretraining.json").read_text())
    params = load_params(REPO / "configs" / "toy-pretrain" / "params.yaml")
    pretrain = read_section(params, "pretrain", PretrainParams)
    assert record["params"] == json.loads(json.dumps(pretrain.record_for(*sections)))
    assert record["seed"] == read_seed(params)
    assert record["base"]["folder"] == str(base.relative_to(REPO))
    assert record["base"]["sha256"] == folder_digest(base)
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert (folder / vae).read_bytes() == (base / vae).read_bytes()


def test_the_committed_zero_snr_model_is_a_v_prediction_model_with_zero_terminal_snr():
    """The decoder the CPU configuration starts from trains and samples under the schedule it
    was trained with: its saved scheduler config gives the GLASS decoder a pure-noise last
    timestep, v as the target and trailing DDIM timesteps that start there."""
    from glass.model.diffusion_decoder import DiffusionDecoder

    decoder = DiffusionDecoder.from_pretrained(str(ZERO_SNR), image_size=64)
    scheduler = decoder.noise_scheduler
    assert decoder.prediction_type == "v_prediction"
    # SD's own schedule keeps alpha_bar = 0.068 ** 2 of the image there
    assert float(scheduler.alphas_cumprod[-1]) < 1e-6
    latents, noise = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    last = torch.tensor([scheduler.config.num_train_timesteps - 1])
    assert torch.allclose(scheduler.add_noise(latents, noise, last), noise, atol=1e-3)
    assert scheduler.config.timestep_spacing == "trailing"


def tiny_continuation(base: Path, out: Path, pretrain: PretrainParams | None = None) -> Path:
    from glass.pretrain.params import ContinuedDiffusionSettings
    from glass.pretrain.stable_diffusion_continued import run_stable_diffusion_continuation

    pretrain = pretrain or PretrainParams(
        stable_diffusion=TINY_SETTINGS,
        stable_diffusion_continued=ContinuedDiffusionSettings(unet_steps=2, warmup_steps=1))
    run_stable_diffusion_continuation(pretrain, 1, base, out / "model", out / "m.json",
                                      out / "u.tsv", out / "s.png", repo=REPO)
    return out


def test_a_continuation_is_deterministic_and_trains_only_the_denoiser(tmp_path):
    from diffusers import StableDiffusionPipeline

    from glass.io import folder_digest

    base = tiny_run(tmp_path, "base") / "model"
    first = tiny_continuation(base, tmp_path / "c1") / "model"
    second = tiny_continuation(base, tmp_path / "c2") / "model"
    unet = "unet/diffusion_pytorch_model.safetensors"
    text = "text_encoder/model.safetensors"
    vae = "vae/diffusion_pytorch_model.safetensors"
    for part in (unet, text):
        a, b, before = load_file(first / part), load_file(second / part), load_file(base / part)
        assert all(torch.equal(a[k], b[k]) for k in a), part
        assert any(not torch.equal(a[k], before[k]) for k in a), f"{part} did not train"
    assert (first / vae).read_bytes() == (base / vae).read_bytes()
    record = json.loads((first / "pretraining.json").read_text())
    assert set(record["params"]) == {"world", "stable_diffusion", "stable_diffusion_continued"}
    assert record["params"]["stable_diffusion_continued"]["unet_steps"] == 2
    assert record["base"]["sha256"] == folder_digest(base)
    assert StableDiffusionPipeline.from_pretrained(first, safety_checker=None).vae_scale_factor == 4
    assert (tmp_path / "c1" / "u.tsv").read_text().splitlines()[0] == "step\tloss"
    assert (tmp_path / "c1" / "s.png").is_file()


def test_a_continuation_refuses_a_base_trained_with_other_params(tmp_path):
    from glass.errors import InvalidInput

    base = tiny_run(tmp_path, "base") / "model"
    other = PretrainParams(stable_diffusion=replace(TINY_SETTINGS, unet_lr=1e-4))
    with pytest.raises(InvalidInput, match="pretraining.json: the base was trained with other"):
        tiny_continuation(base, tmp_path / "c", other)
    assert not (tmp_path / "c" / "model").exists()
    (base / "pretraining.json").unlink()
    with pytest.raises(InvalidInput, match="pretraining.json: missing"):
        tiny_continuation(base, tmp_path / "c")


def test_a_zero_snr_cycle_trains_for_v_under_zero_terminal_snr_and_needs_a_continued_base(tmp_path):
    """The third cycle (stage zero_snr_stable_diffusion) on a tiny continuation: the UNet and
    text encoder train, the VAE stays, the folder's scheduler is DDIM at zero terminal SNR with v
    and trailing steps, and the from-scratch model is refused as its base (its record has no
    continuation section)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from glass.errors import InvalidInput
    from glass.pretrain.params import ContinuedDiffusionSettings, ZeroTerminalSnrSettings
    from glass.pretrain.stable_diffusion_continued import ZERO_SNR as CYCLE, run_further_cycle

    pretrain = PretrainParams(
        stable_diffusion=TINY_SETTINGS,
        stable_diffusion_continued=ContinuedDiffusionSettings(unet_steps=2, warmup_steps=1),
        stable_diffusion_zero_snr=ZeroTerminalSnrSettings(unet_steps=2, warmup_steps=1))
    scratch = tiny_run(tmp_path, "base") / "model"
    base = tiny_continuation(scratch, tmp_path / "c", pretrain) / "model"
    out = tmp_path / "z"
    run_further_cycle(pretrain, 1, base, out / "model", out / "m.json", out / "u.tsv",
                      out / "s.png", CYCLE, repo=REPO)
    model = out / "model"
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        after, before = load_file(model / part), load_file(base / part)
        assert any(not torch.equal(after[k], before[k]) for k in after), f"{part} did not train"
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert (model / vae).read_bytes() == (base / vae).read_bytes()
    config = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DDIMScheduler"
    assert (config["rescale_betas_zero_snr"], config["prediction_type"],
            config["timestep_spacing"], config["clip_sample"]) == (
        True, "v_prediction", "trailing", False)
    assert float(DDPMScheduler.from_pretrained(model, subfolder="scheduler")
                 .alphas_cumprod[-1]) < 1e-6
    sampler = DDIMScheduler.from_pretrained(model, subfolder="scheduler")
    sampler.set_timesteps(10)
    assert int(sampler.timesteps[0]) == 999
    record = json.loads((model / "pretraining.json").read_text())
    assert set(record["params"]) == {"world", "stable_diffusion", "stable_diffusion_continued",
                                     "stable_diffusion_zero_snr"}
    assert "zero terminal SNR" in (model / "README.md").read_text()
    with pytest.raises(InvalidInput, match="pretrain.stable_diffusion_continued / seed say now"):
        run_further_cycle(pretrain, 1, scratch, tmp_path / "x" / "model", out / "m2.json",
                          out / "u2.tsv", out / "s2.png", CYCLE, repo=REPO)
    assert not (tmp_path / "x" / "model").exists()


def test_the_denoising_target_follows_the_prediction_type():
    from diffusers import DDPMScheduler

    from glass.pretrain.latent_diffusion import denoising_target

    latents, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    timesteps = torch.tensor([10, 900])
    epsilon = DDPMScheduler(prediction_type="epsilon")
    assert torch.equal(denoising_target(epsilon, latents, noise, timesteps), noise)
    v = DDPMScheduler(prediction_type="v_prediction")
    alpha_bar = v.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    assert torch.allclose(denoising_target(v, latents, noise, timesteps), expected, atol=1e-6)
    with pytest.raises(ValueError, match="'sample'"):
        denoising_target(DDPMScheduler(prediction_type="sample"), latents, noise, timesteps)


def test_cross_attention_query_key_projections_learn_at_their_own_rate():
    """The first AdamW step moves a weight by about lr (sign of the gradient), so with
    ``cross_attention_qk_lr_factor`` k the cross-attention query/key weights move k times as far
    as with k = 1, and every other weight moves as far in both runs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from glass.pretrain.latent_diffusion import (cross_attention_query_key_parameters,
                                                 train_denoiser)
    from glass.tiny.stable_diffusion import (build_tiny_clip_tokenizer, tiny_text_config,
                                             tiny_unet_config, tiny_vae_config)

    tokenizer = build_tiny_clip_tokenizer()
    pool = render_pool(ToyWorldConfig(image_size=64), seed=0, count=4, progress=False)
    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config()).requires_grad_(False)
    unet0, text0 = UNet2DConditionModel(**tiny_unet_config()), CLIPTextModel(tiny_text_config(tokenizer))
    names = {name for name, _ in unet0.named_parameters()}
    chosen = {name for name, p in unet0.named_parameters()
              if any(p is q for q in cross_attention_query_key_parameters(unet0))}
    assert chosen and all(".attn2.to_q." in n or ".attn2.to_k." in n for n in chosen)
    assert len(chosen) == sum(".attn2.to_q." in n or ".attn2.to_k." in n for n in names)
    moves = {}
    for factor in (1.0, 8.0):
        unet, text = (type(unet0)(**tiny_unet_config()), CLIPTextModel(tiny_text_config(tokenizer)))
        unet.load_state_dict(unet0.state_dict())
        text.load_state_dict(text0.state_dict())
        settings = replace(LatentDiffusionSettings(), unet_steps=1, unet_batch_size=2,
                           warmup_steps=1, ema_decay=0.0, cross_attention_qk_lr_factor=factor)
        train_denoiser(unet, text, tokenizer, vae, pool, settings, seed=0, progress=False)
        before = dict(unet0.named_parameters())
        moves[factor] = {name: float((p - before[name]).abs().max())
                         for name, p in unet.named_parameters()}
    for name in chosen:
        assert moves[8.0][name] == pytest.approx(8 * moves[1.0][name], rel=0.05), name
    other = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert moves[8.0][other] == pytest.approx(moves[1.0][other], rel=1e-4)


def test_class_embedding_experiment_compares_every_class_pair(tmp_path):
    """experiments/class_embedding_similarity.py on the committed tiny SD, named: one cosine per
    pair of the 8 toy classes, a mean that is theirs, and the closest pair among them."""
    import subprocess
    import sys

    report_path = tmp_path / "similarity.json"
    result = subprocess.run(
        [sys.executable, "experiments/class_embedding_similarity.py", "--model",
         f"committed={COMMITTED}", "--report", str(report_path)],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(report_path.read_text())["committed"]
    assert len(row["pairs"]) == 8 * 7 // 2
    assert all(-1.0 <= value <= 1.0 for value in row["pairs"].values())
    assert row["mean_cosine"] == pytest.approx(sum(row["pairs"].values()) / 28, abs=1e-4)
    assert row["pairs"][row["max_pair"]] == max(row["pairs"].values())


def test_single_class_experiment_scores_every_class_and_draws_their_sampling(tmp_path):
    """experiments/single_class_generation.py on the committed tiny SD and judge: a row per toy
    class with shares in [0, 1], a positive latent std and denoising MSEs whose gain is theirs;
    the grid and the table are written."""
    import subprocess
    import sys

    out = tmp_path / "single"
    result = subprocess.run(
        [sys.executable, "experiments/single_class_generation.py", "--model", str(COMMITTED),
         "--samples", "2", "--scenes", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    from glass.data.toy_world import DEFAULT_TOY_CLASSES
    assert set(report["classes"]) == set(DEFAULT_TOY_CLASSES)
    for row in report["classes"].values():
        assert 0 <= row["present"] <= 1 and 0 <= row["empty"] <= 1
        assert 0 <= row["class_share"] <= 1 and row["latent_std"] > 0
        assert row["own_prompt"] > 0 and row["empty_prompt"] > 0
        # the gain comes from the unrounded MSEs; each value is rounded to 4 decimals, which moves
        # own / empty by at most half a unit over empty plus own / empty^2 (and the gain itself by
        # half a unit): small MSEs of one scene make that bound wide, so it is computed, not fixed
        own, empty, half_unit = row["own_prompt"], row["empty_prompt"], 0.5e-4
        bound = half_unit * (1 / empty + own / empty ** 2) + half_unit
        assert row["gain"] == pytest.approx(1 - own / empty, abs=bound * 1.01)
    assert "| donut |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").is_file()
