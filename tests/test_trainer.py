"""Two-phase training on tiny models: resume, phases, failure behaviour, saved modules."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from glass.model import GlassModel
from glass.model.mlp_decoder import MLPDecoder
from glass.model.slot_attention import SlotAttention
from glass.synth.sharded_run import run_sharded_synthesis
from glass.tiny.dinov2 import build_tiny_dinov2
from glass.tiny.stable_diffusion import build_tiny_stable_diffusion
from glass.train import trainer
from glass.train.checkpoints import latest_checkpoint
from glass.train.params import TrainParams
from typed_params import toy_spec, typed

TRAIN = typed(TrainParams, {
    "model": {"encoder_image_size": 64, "decoder_image_size": 64, "num_slots": 4,
              "num_iterations": 2, "slot_size": 32, "mlp_hidden_size": 32,
              "mlp_decoder_hidden_size": 32, "mlp_decoder_hidden_layers": 3},
    "loss": {"recon": 1.0, "semantic": 0.7, "instance": 0.9},
    "data": {"batch_size": 4, "num_workers": 0, "mask_size": 32, "flip": True,
             "feature_cache": False, "on_corrupt": "raise"},
    "optim": {"mixed_precision": "no", "gradient_accumulation_steps": 1, "max_grad_norm": 1.0},
    "logging": {"log_every": 2, "grid_every": 3, "grid_reconstruction_steps": 2,
                "checkpoint_every": 2, "checkpoint_limit": 2},
    "phase1": {"steps": 6, "lr": 1e-3},
    "phase2": {"steps": 2, "unet_lr": 4e-5, "slot_lr": 1e-8},
}, "train")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    (root / ".dvc").mkdir()   # a repository: references inside it are stored relative
    records = [{"key": f"toy-{i:04d}", "prompt": "p", "caption": "c",
                "classes": [["kite", "tv"], ["pizza"], ["donut", "donut"]][i % 3]} for i in range(12)]
    run_sharded_synthesis(records, toy_spec({"image_size": 64}),
                          root / "shards", shard_size=5, seed=0, batch_size=4, num_workers=0,
                          jpeg_quality=90, store_attention=False, progress=False)
    refs = {"encoder": str(build_tiny_dinov2(root / "dinov2")),
            "stable_diffusion": str(build_tiny_stable_diffusion(root / "sd"))}
    return root, refs


def _train(root, refs, name, phase=1, train=TRAIN, init=None, cache=None):
    base = root / name
    return trainer.train_phase(phase, train, 0, refs, root / "shards", base / "model",
                               base / "scratch", base / "live", init_dir=init, cache_dir=cache)


def test_phase_one_then_two_save_from_pretrained_loadable_modules(setup):
    root, refs = setup
    terms = _train(root, refs, "p1")
    assert terms["step"] == 6 and all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    p1 = root / "p1" / "model"
    slots = SlotAttention.from_pretrained(p1 / "slot_attention")
    assert slots.config.num_slots == 4
    MLPDecoder.from_pretrained(p1 / "mlp_decoder")
    assert not (p1 / "unet").exists()  # phase 1 leaves the UNet as it was
    # glass.json points at the repository's models relatively: a moved or DVC-pulled copy of
    # the repository still loads
    info = json.loads((p1 / "glass.json").read_text())
    assert info["encoder"] == {"source": "local", "path": "../../dinov2"}
    moved = root.parent / f"{root.name}-moved"
    for part in ("dinov2", "p1/model"):
        shutil.copytree(root / part, moved / part)
    trained = GlassModel.from_pretrained(moved / "p1" / "model")
    assert trained.predict_labels(torch.rand(1, 3, 64, 64), ["k"]).shape == (1, 64, 64)
    assert trained.encoder.model_id == str((moved / "dinov2").resolve())
    grid = Image.open(root / "p1" / "live" / "plots" / "images" / "phase1_step0000003.png")
    # image, pseudo mask, slot-attention masks, MLP-decoder masks, reconstruction: 128-px tiles
    # with 2-px gaps (glass.viz.save_grid)
    assert grid.size == (5 * 128 + 4 * 2, 4 * 128 + 3 * 2)
    assert (root / "p1" / "live" / "plots" / "metrics" / "phase1" / "semantic.tsv").exists()

    # checkpoints hold the trained modules' weights only (plus optimizer, RNG, data position)
    from safetensors import safe_open
    checkpoint = latest_checkpoint(root / "p1" / "scratch" / "checkpoints")[1]
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        prefixes = {key.split(".")[0] for key in handle.keys()}
    assert prefixes == {"slot_attention", "mlp_decoder"}

    _train(root, refs, "p2", phase=2, init=p1)
    checkpoint = latest_checkpoint(root / "p2" / "scratch" / "checkpoints")[1]
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert {key.split(".")[0] for key in keys} == {"slot_attention", "mlp_decoder", "decoder"}
    assert all(key.startswith("decoder.unet.") for key in keys if key.startswith("decoder"))
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(root / "p2" / "model" / "unet")
    original = UNet2DConditionModel.from_pretrained(refs["stable_diffusion"], subfolder="unet")
    changed = any(not torch.equal(a, b) for a, b in zip(unet.state_dict().values(),
                                                        original.state_dict().values()))
    assert changed  # phase 2 fine-tunes the UNet
    # no absolute load path in the saved configs: the same bytes wherever the repo lives
    for module in ("slot_attention", "mlp_decoder", "unet"):
        assert "_name_or_path" not in json.loads(
            (root / "p2" / "model" / module / "config.json").read_text())
    # slot attention moves only at lr 1e-8 in phase 2
    before = load_file(p1 / "slot_attention" / "diffusion_pytorch_model.safetensors")
    after = load_file(root / "p2" / "model" / "slot_attention" / "diffusion_pytorch_model.safetensors")
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-5


def test_phase_learning_rates_and_frozen_unet(setup):
    root, refs = setup
    model = trainer.build_model(TRAIN, 0, refs, 1, None)
    groups = trainer.parameter_groups(model, 1, TRAIN)
    assert [g["lr"] for g in groups] == [1e-3]
    assert not any(p.requires_grad for p in model.decoder.unet.parameters())
    groups = trainer.parameter_groups(model, 2, TRAIN)
    assert {g["name"]: g["lr"] for g in groups} == {"slots": 1e-8, "unet": 4e-5}
    assert all(p.requires_grad for p in model.decoder.unet.parameters())


_RUN = """
import logging, sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {tests!r})
from test_trainer import TRAIN
from glass.train import trainer
# every step logged, every second one checkpointed: a kill leaves logged rows past the checkpoint
train = TRAIN.replace(phase1=TRAIN.phase1.replace(steps=10),
                      logging=TRAIN.logging.replace(log_every=1))
trainer.train_phase(1, train, 0, {refs!r}, {shards!r}, {out!r}, {scratch!r}, {live!r})
"""


def _logged_rows(live):
    """(metric, step, value) of every DVCLive TSV row, timestamps left out."""
    rows = []
    for path in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        lines = path.read_text().splitlines()
        header = lines[0].split("\t")
        for line in lines[1:]:
            values = dict(zip(header, line.split("\t")))
            rows.append((path.name, int(values["step"]), values[path.stem]))
    return rows


def _run_script(root, refs, name):
    base = root / name
    return _RUN.format(tests=str(Path(__file__).parent), refs=refs, shards=str(root / "shards"),
                       out=str(base / "model"), scratch=str(base / "scratch"), live=str(base / "live"))


def test_a_killed_run_resumes_from_its_last_checkpoint_with_the_same_result(setup):
    root, refs = setup
    subprocess.run([sys.executable, "-c", _run_script(root, refs, "straight")], check=True)
    process = subprocess.Popen([sys.executable, "-c", _run_script(root, refs, "killed")])
    checkpoints = root / "killed" / "scratch" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and (latest_checkpoint(checkpoints) or (0,))[0] < 4:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step, _ = latest_checkpoint(checkpoints)
    assert 4 <= step < 10, "the run should have been killed between checkpoints"
    assert not (root / "killed" / "model").exists()
    resumed = subprocess.run([sys.executable, "-c", _run_script(root, refs, "killed")],
                             capture_output=True, text=True, check=True)
    assert "resumed from" in resumed.stderr and f"at step {step}" in resumed.stderr
    for module in ("slot_attention", "mlp_decoder"):
        a = load_file(root / "straight" / "model" / module / "diffusion_pytorch_model.safetensors")
        b = load_file(root / "killed" / "model" / module / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), f"{module} differs after resume"
    # the loss curves list each step once, with the values of the uninterrupted run
    straight, killed = _logged_rows(root / "straight" / "live"), _logged_rows(root / "killed" / "live")
    assert len(killed) == len(set((name, step) for name, step, _ in killed)) == 4 * 10
    assert killed == straight
    # optimizer state came back too: Adam's step counter continued from the checkpoint
    final = torch.load(latest_checkpoint(checkpoints)[1] / "optimizer.bin", weights_only=False)
    assert max(int(s["step"]) for s in final["state"].values()) == 10


def test_a_non_finite_loss_names_step_and_samples_and_keeps_the_checkpoint(setup, monkeypatch):
    root, refs = setup
    real_forward = trainer.GlassModel.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        output = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # step index 3
            output.terms["semantic"] = torch.tensor(float("nan"))
        return output

    monkeypatch.setattr(trainer.GlassModel, "forward", poisoned)
    with pytest.raises(trainer.NonFiniteLoss, match=r"step 3.*semantic.*toy-\d{4}"):
        _train(root, refs, "nan")
    assert latest_checkpoint(root / "nan" / "scratch" / "checkpoints")[0] == 2
    assert not (root / "nan" / "model").exists()


def test_out_of_memory_advice_names_the_params():
    advice = trainer.out_of_memory_advice(RuntimeError("CUDA out of memory"))
    for param in ("train.data.batch_size", "gradient_accumulation_steps", "mixed_precision"):
        assert param in advice


def test_skipped_corrupt_shards_are_recorded_in_the_metrics_and_the_trained_folder(setup):
    root, refs = setup
    shards = root / "shards-damaged"
    shutil.copytree(root / "shards", shards)
    tar = sorted(shards.glob("shard-*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:-700])   # truncated, as by a full disk
    train = TRAIN.replace(data=TRAIN.data.replace(on_corrupt="skip"),
                          phase1=TRAIN.phase1.replace(steps=2))
    base = root / "damaged"
    trainer.train_phase(1, train, 0, refs, shards, base / "model", base / "scratch", base / "live")
    info = json.loads((base / "model" / "glass.json").read_text())
    assert [name for name, _ in info["data_skipped"]["shards"]] == [tar.name]
    assert "bytes, manifest says" in info["data_skipped"]["shards"][0][1]
    metrics = json.loads((base / "live" / "metrics.json").read_text())
    assert metrics["phase1"]["skipped_shards"] == 1 and metrics["phase1"]["skipped_samples"] == 0
    # an intact run records nothing skipped
    intact = root / "intact"
    trainer.train_phase(1, train, 0, refs, root / "shards", intact / "model", intact / "scratch",
                        intact / "live")
    assert "data_skipped" not in json.loads((intact / "model" / "glass.json").read_text())


def test_damaged_weights_name_the_file_and_the_fix(setup, tmp_path):
    root, refs = setup
    from glass.errors import MissingInput
    from glass.model.encoder import FrozenDinov2Encoder

    encoder = tmp_path / "dinov2"
    shutil.copytree(refs["encoder"], encoder)
    weights = encoder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(MissingInput, match=r"model.safetensors is truncated or corrupt.*rerun the "
                                           r"models stage \(`dvc repro -f -s models`"):
        FrozenDinov2Encoder(str(encoder), image_size=64)
    trained = tmp_path / "trained"
    short = TRAIN.replace(phase1=TRAIN.phase1.replace(steps=1))
    trainer.train_phase(1, short, 0, refs, root / "shards", trained, tmp_path / "scratch",
                        tmp_path / "live")
    shutil.copytree(refs["encoder"], tmp_path / "dinov2-ok")
    info = json.loads((trained / "glass.json").read_text())
    info["encoder"] = {"source": "local", "path": "../dinov2-ok"}
    info["stable_diffusion"] = {"source": "local", "path": os.path.relpath(refs["stable_diffusion"],
                                                                             trained)}
    (trained / "glass.json").write_text(json.dumps(info))
    slot_weights = trained / "slot_attention" / "diffusion_pytorch_model.safetensors"
    slot_weights.write_bytes(slot_weights.read_bytes()[:100])
    with pytest.raises(MissingInput, match="trained slot attention: weights file .*slot_attention"
                                           ".*truncated or corrupt.*rerun the train stage"):
        GlassModel.from_pretrained(trained)
