"""Two-phase GLASS training with accelerate (paper Sec. 4; supplement Sec. 2, Table 10).

Phase 1 trains slot attention and the MLP decoder (Adam, constant lr 2e-5) with the SD UNet frozen
— gradients still flow through it into the slots. Phase 2 fine-tunes the UNet (lr 4e-5) while
slot attention and the MLP decoder continue at 1e-8. Loss L = L_recon + λs·L_semantic + λi·L_instance.

A run resumes from its newest complete checkpoint (model, optimizer, step counter and data stream
position), every loss term is logged with DVCLive, and an image grid is written periodically (image,
pseudo mask, slot-attention masks, MLP-decoder masks, and the diffusion decoder's DDIM
reconstruction from the slots). A non-finite loss stops the run naming the step and the batch's
sample keys with the last good checkpoint intact; out-of-memory errors name the params to lower.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from glass.errors import InvalidInput, StageFailed
from glass.model.diffusion_decoder import DiffusionDecoder
from glass.model.encoder import FrozenDinov2Encoder
from glass.model.glass import GlassModel, GlassOutput, LossWeights
from glass.model.inference import slot_masks_to_labels, upsample_masks
from glass.model.mlp_decoder import MLPDecoder
from glass.model.slot_attention import SlotAttention
from glass.seeding import sample_seed
from glass.train.checkpoints import latest_checkpoint, save_checkpoint
from glass.train.data import infinite_batches
from glass.train.feature_cache import FeatureCache
from glass.train.params import TrainParams
from glass.viz import save_grid, tensor_to_image

log = logging.getLogger(__name__)

PHASES = (1, 2)


class NonFiniteLoss(StageFailed):
    """Raised when a loss term is NaN or infinite; the message names the step and samples."""


@dataclass
class TrainingState:
    """What a checkpoint must restore besides model and optimizer: the step counter, the
    position in the data stream and the corrupt samples skipped so far (registered with
    accelerate for save_state/load_state), so that a resumed run records what an uninterrupted
    one would."""

    step: int = 0
    data: dict | None = None
    skipped_samples: list[str] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"step": self.step, "data": self.data, "skipped_samples": self.skipped_samples}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.data = state["data"]
        self.skipped_samples = list(state.get("skipped_samples", []))


def build_model(train: TrainParams, seed: int, refs: dict[str, str], phase: int,
                init_dir: Path | None) -> GlassModel:
    """Phase 1 starts slot attention and the MLP decoder from scratch (seeded); phase 2 loads them,
    and the UNet, from phase 1's output folder."""
    sizes = train.model
    encoder = FrozenDinov2Encoder(refs["encoder"], image_size=sizes.encoder_image_size)
    decoder = DiffusionDecoder.from_pretrained(refs["stable_diffusion"],
                                               image_size=sizes.decoder_image_size)
    if phase == 1:
        torch.manual_seed(seed)
        slot_attention = SlotAttention(
            input_dim=encoder.feature_dim, grid_size=list(encoder.grid_size),
            num_slots=sizes.num_slots, num_iterations=sizes.num_iterations,
            slot_size=sizes.slot_size, mlp_hidden_size=sizes.mlp_hidden_size,
            output_dim=decoder.conditioning_dim)
        mlp_decoder = MLPDecoder(
            slot_size=sizes.slot_size, feature_dim=encoder.feature_dim,
            num_tokens=int(np.prod(encoder.grid_size)),
            hidden_size=sizes.mlp_decoder_hidden_size,
            num_hidden_layers=sizes.mlp_decoder_hidden_layers)
    else:
        if init_dir is None:
            raise ValueError("phase 2 needs phase 1's output folder")
        phase1 = GlassModel.from_pretrained(init_dir, with_encoder=False)
        if phase1.mlp_decoder is None:
            raise InvalidInput(f"{init_dir} has no MLP decoder to continue training")
        slot_attention, mlp_decoder = phase1.slot_attention.train(), phase1.mlp_decoder.train()
    return GlassModel(encoder, slot_attention, mlp_decoder, decoder)


def parameter_groups(model: GlassModel, phase: int, train: TrainParams) -> list[dict]:
    """Phase 1: slot attention + MLP decoder at lr, UNet frozen. Phase 2: UNet at unet_lr, slot
    attention + MLP decoder at slot_lr (paper: 4e-5 and 1e-8)."""
    slots = list(model.slot_attention.parameters()) + list(model.mlp_decoder.parameters())
    unet = list(model.decoder.unet.parameters())
    if phase == 1:
        for parameter in unet:
            parameter.requires_grad_(False)
        return [{"params": slots, "lr": train.phase1.lr, "name": "slots"}]
    for parameter in unet:
        parameter.requires_grad_(True)
    return [{"params": slots, "lr": train.phase2.slot_lr, "name": "slots"},
            {"params": unet, "lr": train.phase2.unet_lr, "name": "unet"}]


def trained_prefixes(phase: int) -> tuple[str, ...]:
    """The state-dict prefixes of the modules phase ``phase`` trains (``parameter_groups``)."""
    return ("slot_attention.", "mlp_decoder.") + (("decoder.unet.",) if phase == 2 else ())


def _unwrapped_key(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key   # DDP's prefix


def checkpoint_weights_hook(phase: int):
    """An accelerate save-state pre-hook keeping only the trained modules' weights: the frozen
    encoder, VAE and (phase 1) UNet are the models stage's files already, and at paper size
    would be 3.9 GiB of every checkpoint (docs/paper-facts.md "Training")."""
    prefixes = trained_prefixes(phase)

    def keep_trained(models, weights, output_dir) -> None:
        for index, state in enumerate(weights):
            weights[index] = {key: value for key, value in state.items()
                              if _unwrapped_key(key).startswith(prefixes)}
    return keep_trained


def check_checkpoint_weights(folder: Path, model: torch.nn.Module, phase: int) -> None:
    """Before resuming from ``folder`` (loaded with strict=False, as it holds only the trained
    weights): it must hold every weight this phase trains, so nothing is silently left at its
    initial value. (A checkpoint of an earlier version also holds the frozen weights, which are
    the same files' values: it resumes too.)"""
    from safetensors import safe_open

    path = folder / "model.safetensors"
    if not path.is_file():
        raise StageFailed(f"checkpoint {folder} has no model.safetensors; delete it to start "
                          "this phase again")
    with safe_open(str(path), framework="pt") as handle:
        stored = {_unwrapped_key(key) for key in handle.keys()}
    expected = {key for key in (_unwrapped_key(k) for k in model.state_dict())
                if key.startswith(trained_prefixes(phase))}
    missing = expected - stored
    if missing:
        raise StageFailed(f"checkpoint {folder} lacks {len(missing)} of the weights phase {phase} "
                          f"trains (e.g. {sorted(missing)[0]}); it was written by another phase "
                          "or version: delete the scratch checkpoints to start this phase again")


def _upsampled_argmax(masks: torch.Tensor, grid_size: tuple[int, int],
                      size: tuple[int, int]) -> torch.Tensor:
    """(B, K, N) soft masks over the token grid → (B, H, W) slot index + 1 (0 stays free for
    the palette's black), as in the evaluation."""
    return slot_masks_to_labels(upsample_masks(masks.detach().cpu(), grid_size, size)) + 1


def slot_mask_grid_rows(batch: dict, attention: torch.Tensor, grid_size: tuple[int, int],
                        rows: int = 4, mlp_masks: torch.Tensor | None = None,
                        reconstructions: torch.Tensor | None = None) -> list[list[np.ndarray]]:
    """Per sample (first ``rows``): image, pseudo mask, slot-attention masks, then the MLP
    decoder's masks and the diffusion decoder's reconstruction when given."""
    images = batch["image"][:rows]
    size = tuple(images.shape[-2:])
    slots = _upsampled_argmax(attention[:rows], grid_size, size)
    decoder_slots = (_upsampled_argmax(mlp_masks[:rows], grid_size, size)
                     if mlp_masks is not None else None)
    out = []
    for i in range(images.shape[0]):
        row = [tensor_to_image(images[i]), batch["pseudo_mask"][i].cpu().numpy(),
               slots[i].numpy().astype(np.int64)]
        if decoder_slots is not None:
            row.append(decoder_slots[i].numpy().astype(np.int64))
        if reconstructions is not None:
            row.append(tensor_to_image(reconstructions[i]))
        out.append(row)
    return out


def grid_reconstructions(model: GlassModel, output: GlassOutput, rows: int, steps: int,
                         seed: int, step: int) -> torch.Tensor | None:
    """The diffusion decoder's images from the first ``rows`` samples' slots (DDIM, ``steps``
    steps; noise from the seed and the training step), or None when there is no decoder or
    ``steps`` is 0."""
    if model.decoder is None or steps <= 0 or output.conditioning is None:
        return None
    generator = torch.Generator(device=output.conditioning.device)
    generator.manual_seed(sample_seed(seed, f"grid-step{step}", "reconstruction"))
    return model.decoder.reconstruct(output.conditioning[:rows], num_inference_steps=steps,
                                     generator=generator)


def format_terms(terms: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in terms.items())


def out_of_memory_advice(error: BaseException) -> str:
    return (f"out of memory ({error}). Lower train.data.batch_size and raise "
            "train.optim.gradient_accumulation_steps to keep the effective batch, use "
            "train.optim.mixed_precision fp16/bf16, or lower train.model.encoder_image_size / "
            "decoder_image_size.")


def check_finite(terms: dict[str, torch.Tensor], step: int, keys: list[str]) -> None:
    bad = {name: float(value) for name, value in terms.items() if not torch.isfinite(value).all()}
    if bad:
        shown = ", ".join(keys[:16]) + (" …" if len(keys) > 16 else "")
        raise NonFiniteLoss(f"non-finite loss at step {step}: {bad}; batch samples: {shown}. The "
                            "last good checkpoint is intact; lower the learning rate or check "
                            "these samples")


def trim_live_history(live_dir: Path, last_step: int) -> int:
    """Drop the rows of the DVCLive step TSVs logged after ``last_step`` (the checkpoint a run
    resumes from): the resumed run logs those steps again, and each step must appear once.
    Returns the number of rows removed."""
    removed = 0
    for path in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        column = rows[0].index("step")
        kept = [rows[0]] + [row for row in rows[1:] if len(row) > column
                            and row[column].strip() and int(float(row[column])) <= last_step]
        if len(kept) != len(rows):
            removed += len(rows) - len(kept)
            with open(path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(kept)
    return removed


def train_phase(phase: int, train: TrainParams, seed: int, refs: dict[str, str],
                shard_dir: str | Path, out_dir: str | Path, scratch_dir: str | Path,
                live_dir: str | Path, init_dir: str | Path | None = None,
                cache_dir: str | Path | None = None) -> dict[str, float]:
    """Run one phase to ``train.phase<phase>.steps``; resumes from ``scratch_dir/checkpoints``.

    ``cache_dir`` holds the encoder feature cache (shared by both phases) when
    ``train.data.feature_cache`` is on.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be 1 or 2, got {phase}")
    from dvclive import Live  # imported here: it pulls in DVC's repo machinery

    optim, data, logging_params = train.optim, train.data, train.logging
    if optim.mixed_precision != "no" and not torch.cuda.is_available():
        # accelerate would silently train in float32 on the CPU: a GPU configuration, hours long
        raise InvalidInput(f"train.optim.mixed_precision is {optim.mixed_precision}, which needs a "
                           "CUDA GPU, and this machine has none. Run on a GPU, or set "
                           "train.optim.mixed_precision: no to train in float32 on the CPU")
    total_steps = train.steps(phase)
    scratch_dir, out_dir, live_dir = Path(scratch_dir), Path(out_dir), Path(live_dir)
    accelerator = Accelerator(mixed_precision=optim.mixed_precision if torch.cuda.is_available()
                              else "no",
                              gradient_accumulation_steps=optim.gradient_accumulation_steps)
    model = build_model(train, seed, refs, phase, Path(init_dir) if init_dir else None)
    optimizer = torch.optim.Adam(parameter_groups(model, phase, train))
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    accelerator.register_save_state_pre_hook(checkpoint_weights_hook(phase))
    checkpoint_dir = scratch_dir / "checkpoints"
    resumed = latest_checkpoint(checkpoint_dir)
    if resumed is not None:
        check_checkpoint_weights(resumed[1], model, phase)
        # strict=False: the checkpoint holds the trained weights only (checked just above)
        accelerator.load_state(str(resumed[1]), strict=False)
        log.info("phase %d: resumed from %s at step %d", phase, resumed[1], state.step)
        if accelerator.is_main_process:
            trimmed = trim_live_history(live_dir, state.step)
            if trimmed:
                log.info("phase %d: dropped %d logged rows after step %d (logged again now)",
                         phase, trimmed, state.step)

    weights = LossWeights(recon=train.loss.recon, semantic=train.loss.semantic,
                          instance=train.loss.instance)
    unwrapped = accelerator.unwrap_model(model)
    cache = None
    if data.feature_cache:
        if cache_dir is None:
            raise ValueError("train.data.feature_cache is on but no cache folder was given")
        fingerprint = f"{refs['encoder']}|{train.model.encoder_image_size}"
        cache = FeatureCache(cache_dir, fingerprint)
    stream = infinite_batches(
        shard_dir, image_size=train.model.encoder_image_size, mask_size=data.mask_size,
        batch_size=data.batch_size, num_workers=data.num_workers, seed=seed + phase,
        process_index=accelerator.process_index, num_processes=accelerator.num_processes,
        flip=data.flip, on_corrupt=data.on_corrupt)
    if state.data is not None:
        stream.load_state_dict(state.data)
    generator = torch.Generator()

    live = Live(dir=str(live_dir), resume=resumed is not None, save_dvc_exp=False,
                dvcyaml=False, report=None)
    if accelerator.is_main_process:
        log.info("phase %d: live loss curves and grids in %s (while it runs: `dvc plots show "
                 "%s -x step`)", phase, live_dir, live_dir / "plots" / "metrics")
    progress = tqdm(total=total_steps, initial=state.step, desc=f"train phase {phase}",
                    disable=not accelerator.is_main_process)
    last_terms: dict[str, float] = {}
    started, started_step = time.perf_counter(), state.step
    model.train()
    try:
        while state.step < total_steps:
            batch = next(stream)
            # noise for this step from (seed, phase, step) alone, so a resumed run draws exactly
            # what an uninterrupted one would
            generator.manual_seed(sample_seed(seed, f"phase{phase}-step{state.step}",
                                              f"train-rank{accelerator.process_index}"))
            with accelerator.accumulate(model):
                features = cache.get(batch["key"], flipped=batch["flipped"]) if cache else None
                if features is not None:
                    features = features.to(accelerator.device, torch.float32)
                output = model(batch["image"].to(accelerator.device),
                               batch["pseudo_mask"].to(accelerator.device), weights,
                               features=features, generator=generator)
                if cache is not None and features is None:
                    cache.put(batch["key"], output.features.detach().float().cpu(),
                              flipped=batch["flipped"])
                check_finite(output.terms, state.step, batch["key"])
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and optim.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(
                        [p for group in optimizer.param_groups for p in group["params"]],
                        optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            state.data = stream.state_dict()
            state.skipped_samples = sorted(set(state.skipped_samples) | set(stream.skipped_samples()))
            last_terms = {name: float(value) for name, value in output.terms.items()}
            progress.set_postfix({name: f"{value:.4f}" for name, value in last_terms.items()},
                                 refresh=False)
            progress.update(1)
            if state.step % logging_params.log_every == 0 or state.step == total_steps:
                live.step = state.step  # DVCLive's x axis is the optimisation step
                for name, value in last_terms.items():
                    live.log_metric(f"phase{phase}/{name}", value)
                live.next_step()
                if accelerator.is_main_process:
                    rate = (state.step - started_step) / max(time.perf_counter() - started, 1e-9)
                    log.info("phase %d step %d/%d: %s (%.2f steps/s)", phase, state.step,
                             total_steps, format_terms(last_terms), rate)
            if accelerator.is_main_process and (state.step % logging_params.grid_every == 0
                                                or state.step == total_steps):
                reconstructions = grid_reconstructions(
                    unwrapped, output, rows=4, seed=seed, step=state.step,
                    steps=logging_params.grid_reconstruction_steps)
                rows = slot_mask_grid_rows(batch, output.slot_attention, unwrapped.grid_size,
                                           mlp_masks=output.mlp_masks,
                                           reconstructions=reconstructions)
                save_grid(live_dir / "plots" / "images" / f"phase{phase}_step{state.step:07d}.png",
                          rows)
            if state.step % logging_params.checkpoint_every == 0 or state.step == total_steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(checkpoint_dir, state.step,
                                    lambda d: accelerator.save_state(str(d)),
                                    logging_params.checkpoint_limit)
        skipped = {"shards": [list(entry) for entry in stream.index.skipped],
                   "samples": list(state.skipped_samples)}
        if accelerator.is_main_process:
            # recorded in the metrics too (dvc metrics show): what training did not see
            live.log_metric(f"phase{phase}/skipped_shards", len(skipped["shards"]), plot=False)
            live.log_metric(f"phase{phase}/skipped_samples", len(skipped["samples"]), plot=False)
    except torch.OutOfMemoryError as error:
        raise StageFailed(out_of_memory_advice(error)) from error
    finally:
        progress.close()
        live.end()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # the trained folder: ``data_skipped`` (corrupt shards and samples left out under
        # train.data.on_corrupt: skip) says what the model was not trained on
        accelerator.unwrap_model(model).save_pretrained(
            out_dir, phase=phase, references=refs,
            encoder_image_size=train.model.encoder_image_size,
            decoder_image_size=train.model.decoder_image_size, data_skipped=skipped)
        elapsed = time.perf_counter() - started
        log.info("phase %d done: %d steps (%d in this run, %.0f s), last losses %s; skipped %d "
                 "shard(s) and %d sample(s); modules in %s", phase, state.step,
                 state.step - started_step, elapsed, format_terms(last_terms) or "-",
                 len(skipped["shards"]), len(skipped["samples"]), out_dir)
    if not last_terms:
        # already complete at the last checkpoint: report the checkpoint's own values
        last_terms = {"step": float(state.step)}
    return dict(last_terms, step=float(state.step))
