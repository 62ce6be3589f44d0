"""Typed, validated params: every section read into frozen dataclasses that name the key of any
misspelt, mistyped, missing or out-of-range value, before any work starts."""

from __future__ import annotations

import dataclasses
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glass.check_params import SECTIONS, read_params_file
from glass.data.toy_world import ToyWorldConfig
from glass.errors import GlassError, InvalidInput
from glass.params import Params, ParamsError, load_params, nested, param, read_section, read_seed
from glass.stage_runner import run_stage
from glass.train.params import TrainParams

REPO = Path(__file__).resolve().parents[1]
CPU = REPO / "configs/cpu/params.yaml"


def _with(path: Path, dotted: str, value, tmp_path: Path, *, delete: bool = False) -> Path:
    """A copy of the params file at ``path`` with one key changed (or deleted)."""
    params = yaml.safe_load(path.read_text())
    node = params
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(params))
    return out


# The cases found by trying bad params as a user would: each must fail naming its key.
BAD_VALUES = [
    ("train.phase1.steps", -5, "train.phase1.steps: must be >= 1, got -5"),
    ("data.max_images", -1, "data.max_images: must be >= 1, got -1"),
    ("synth.max_samples", -1, "synth.max_samples: must be >= 1, got -1"),
    ("prompts.max_caption_chars", -1, "prompts.max_caption_chars: must be >= 1"),
    ("train.optim.mixed_precision", "fp8", "train.optim.mixed_precision: must be one of 'no', "
                                           "'fp16', 'bf16', got the string 'fp8'"),
    ("train.logging.log_every", 0, "train.logging.log_every: must be >= 1, got 0"),
    ("train.model.num_slots", 0, "train.model.num_slots: must be >= 1, got 0"),
    ("train.logging.checkpoint_limit", 0, "train.logging.checkpoint_limit: must be >= 1"),
    ("models.dinov2", "foo/bar", "models.dinov2: must be a mapping.*write `{id: foo/bar}`"),
    ("train.phase1.lr", "1e-4", "train.phase1.lr: must be a number, got the string '1e-4' "
                                r"\(PyYAML reads numbers such as 1e-4 as text"),
    ("train.data.batch_size", "16", "train.data.batch_size: must be an integer, got the string"),
    ("train.data.flip", 1, "train.data.flip: must be true or false, got int 1"),
    ("train.optim.mixed_precision", False, "train.optim.mixed_precision: must be one of .*got the "
                                           "boolean false .YAML reads an unquoted no"),
    ("seed", "zero", "seed: must be an integer, got the string 'zero'"),
    ("synth.stable_diffusion.cross_attention_res", 5,
     "synth.stable_diffusion.cross_attention_res: cross-attention resolution 5x5 does not exist"),
    ("synth.stable_diffusion.low", 0.9, r"synth.stable_diffusion.low: \(0.9\) must be <= high"),
    ("evaluate.metrics.conventions.empty_fg_ari", float("inf"),
     "evaluate.metrics.conventions.empty_fg_ari: must be a finite number"),
    ("evaluate.metrics.ground_truth.toy_val", {"voc_boundary": "ignore"},
     "evaluate.metrics.ground_truth.toy_val.voc_boundary: does not apply to a toy dataset"),
    ("evaluate.object_discovery", ["toy_val", "coco_val"],
     r"evaluate.object_discovery\[1\]: names dataset 'coco_val', which is not defined"),
    ("evaluate.datasets.toy_val", {"kind": "toyworld"}, "evaluate.datasets.toy_val.kind: must be "
                                                        "one of coco, toy, voc"),
    ("evaluate.device", "gpu0", "evaluate.device: must be auto, cpu, cuda"),
    ("data.toy.max_objects", 0, "data.toy.max_objects: must be >= 1, got 0"),
    ("caption.backend", "gpt", "caption.backend: must be one of 'blip2', 'labels'"),
    ("evaluate.datasets.toy_val", {"kind": "coco", "root": None, "split": None},
     "evaluate.datasets.toy_val.root: is null, which means the configuration's own coco dataset, "
     "but data.dataset is toy"),
    ("train.loss", {"recon": 0.0, "semantic": 0.0, "instance": 0.0},
     "train.loss.recon: every loss weight is 0"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_fails_naming_its_key(tmp_path, key, value, message):
    with pytest.raises(ParamsError, match=f"params key {message}"):
        read_params_file(_with(CPU, key, value, tmp_path))


def test_a_misspelt_key_is_refused_with_the_closest_known_one(tmp_path):
    params = yaml.safe_load(CPU.read_text())
    params["train"]["optim"]["max_grad_nrom"] = params["train"]["optim"].pop("max_grad_norm")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    # without the check, a misspelt max_grad_norm would silently disable clipping
    with pytest.raises(ParamsError, match="train.optim.max_grad_nrom: unknown key; did you mean "
                                          "'max_grad_norm'"):
        read_params_file(path)
    params["trian"] = params.pop("train")
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="trian: unknown top-level section.*did you mean 'train'"):
        load_params(path)


@pytest.mark.parametrize("key", ["seed", "train.optim.max_grad_norm", "synth.shard_size",
                                 "evaluate.metrics.conventions", "caption.blip2.batch_size"])
def test_a_missing_key_fails_naming_it(tmp_path, key):
    with pytest.raises(ParamsError, match=f"params key {key}: is missing"):
        read_params_file(_with(CPU, key, None, tmp_path, delete=True))


def test_optional_keys_may_be_left_out_and_take_their_documented_default(tmp_path):
    path = _with(CPU, "data.toy.duplicate_class_prob", None, tmp_path, delete=True)
    assert read_params_file(path)["data"].toy.world.duplicate_class_prob == 0.5
    assert read_params_file(CPU)["evaluate"].generation.grid_rows == 4   # not in the file


def test_dataclass_defaults_are_the_paper_configuration():
    """Defaults live in one place (the dataclasses) and agree with params.yaml."""
    paper = read_params_file(REPO / "params.yaml")
    for key, section in SECTIONS.items():
        assert paper[key] == section(), f"params.yaml's {key} differs from {section.__name__}()"


def test_both_configurations_are_valid_and_the_cpu_one_differs_where_it_says():
    cpu = read_params_file(CPU)
    assert cpu["synth"].backend == "stable_diffusion" and cpu["train"].phase1.steps == 2000
    assert cpu["config"].name == "cpu" and cpu["seed"] == 0


def test_a_stage_fails_before_work_with_one_line_naming_the_key(tmp_path):
    params = _with(CPU, "train.phase1.steps", -5, tmp_path)
    out = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "stages/train.py", "--params", str(params), "--phase", "1", "--shards",
         str(tmp_path / "shards"), "--models", str(tmp_path / "models"), "--out", str(out),
         "--live", str(tmp_path / "live"), "--scratch", str(tmp_path / "scratch")],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "params key train.phase1.steps: must be >= 1, got -5" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "scratch").exists()


def test_the_check_command_reads_every_section(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "glass.check_params", "params.yaml", str(CPU)],
                        cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.count("every section is valid") == 2
    bad = _with(CPU, "evaluate.metrics.conventions.mask_source", "decoder", tmp_path)
    failed = subprocess.run([sys.executable, "-m", "glass.check_params", str(bad)], cwd=REPO,
                            capture_output=True, text=True)
    assert failed.returncode == 2
    assert "evaluate.metrics.conventions.mask_source: must be one of" in failed.stderr


# --- the machinery ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Inner(Params):
    size: int = param(3, min=1)
    names: tuple[str, ...] = ("a",)


@dataclasses.dataclass(frozen=True)
class Outer(Params):
    rate: float = param(0.5, gt=0.0, max=1.0)
    inner: Inner = nested(Inner)
    world: ToyWorldConfig = nested(ToyWorldConfig, flatten=True)
    maybe: int | None = param(None, min=0, optional=True)
    undefined_ok: float = param(1.0, allow_nan=True, optional=True)


def test_types_are_converted_and_checked_the_same_way_in_code_and_in_files():
    parsed = Outer.from_params({"rate": 1, "inner": {"size": 2, "names": ["x", "y"]},
                                "image_size": 64, "undefined_ok": float("nan")}, "outer")
    assert parsed.rate == 1.0 and isinstance(parsed.rate, float)
    assert parsed.inner.names == ("x", "y") and parsed.world.image_size == 64
    assert math.isnan(parsed.undefined_ok) and parsed.maybe is None
    assert parsed.as_dict()["image_size"] == 64 and "world" not in parsed.as_dict()
    with pytest.raises(ParamsError, match="Inner.size: must be an integer, got the boolean true"):
        Inner(size=True)
    with pytest.raises(ParamsError, match="outer.inner.size: must be >= 1, got 0"):
        Outer.from_params({"rate": 0.5, "inner": {"size": 0, "names": []}}, "outer")
    with pytest.raises(ParamsError, match="outer.rate: must be > 0.0, got 0.0"):
        Outer.from_params({"rate": 0.0, "inner": {"size": 1, "names": []}}, "outer")
    with pytest.raises(ParamsError, match="outer.rate: must be a finite number, got nan"):
        Outer.from_params({"rate": float("nan"), "inner": {"size": 1, "names": []}}, "outer")
    with pytest.raises(ParamsError, match=r"outer.inner.names\[1\]: must be a string, got int 3"):
        Outer.from_params({"rate": 0.5, "inner": {"size": 1, "names": ["a", 3]}}, "outer")
    with pytest.raises(ParamsError, match="outer: must be a mapping with keys rate, inner"):
        Outer.from_params([1, 2], "outer")


def test_sections_are_frozen_picklable_and_errors_survive_pickling():
    train = TrainParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.phase1 = None   # type: ignore[misc]
    assert pickle.loads(pickle.dumps(train)) == train
    error = pickle.loads(pickle.dumps(ParamsError("train.x", "is wrong")))
    assert isinstance(error, GlassError) and str(error) == "params key train.x: is wrong"
    changed = train.replace(phase1=train.phase1.replace(steps=5))
    assert changed.phase1.steps == 5 and train.phase1.steps == 400_000
    with pytest.raises(ParamsError, match="Phase1Params.steps: must be >= 1"):
        train.phase1.replace(steps=0)


def test_read_section_and_seed_name_what_is_missing():
    with pytest.raises(ParamsError, match="params key train: is missing"):
        read_section({}, "train", TrainParams)
    with pytest.raises(ParamsError, match="params key seed: must be >= 0, got -1"):
        read_seed({"seed": -1})


# --- stage errors ----------------------------------------------------------------------------

def test_project_errors_print_one_line_and_other_errors_keep_their_traceback(capsys,
                                                                            monkeypatch):
    monkeypatch.delenv("GLASS_DEBUG", raising=False)

    def user_error():
        raise InvalidInput("data/x.jsonl:3: not valid JSON; rerun the prompts stage")

    with pytest.raises(SystemExit) as exit_info:
        run_stage("prompts", user_error)
    assert exit_info.value.code == 2
    assert "glass stage 'prompts' failed: data/x.jsonl:3" in capsys.readouterr().err

    def bug():
        return {}["missing"]

    # a KeyError (or any RuntimeError) from a bug is not shortened into a one-line message
    with pytest.raises(KeyError):
        run_stage("prompts", bug)
    with pytest.raises(RuntimeError):
        run_stage("prompts", lambda: (_ for _ in ()).throw(RuntimeError("CUDA error")))

