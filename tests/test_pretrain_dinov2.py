"""Label-free pretraining of the tiny DINOv2 (glass.pretrain.dinov2_ssl) and the instance-structure
measure of patch features (glass.pretrain.instance_structure)."""

from dataclasses import replace

import numpy as np
import torch
from transformers import Dinov2Model

from glass.data.toy_world import ToyWorldConfig
from glass.model.encoder import FrozenDinov2Encoder
from glass.pretrain.dinov2_ssl import pretrain_dinov2, random_masks
from glass.pretrain.instance_structure import instance_structure, kmeans, token_labels
from glass.pretrain.params import SelfDistillationSettings
from glass.tiny.dinov2 import save_dinov2_folder, tiny_dinov2_config


class OracleEncoder:
    """Tokens that are the one-hot instance id at each token (plus noise): perfect structure."""

    grid_size = (4, 4)

    def __init__(self, maps, noise=0.0):
        self.maps, self.noise = maps, noise

    def __call__(self, pixels):
        labels = token_labels(self.maps.pop(0), self.grid_size)
        tokens = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), 4).float()
        tokens = tokens + self.noise * torch.randn(tokens.shape, generator=torch.Generator()
                                                   .manual_seed(0))
        return tokens[None]


def test_structure_is_one_for_features_that_are_the_instances_and_low_for_noise():
    instance_map = np.zeros((8, 8), np.int32)
    instance_map[:4, :4], instance_map[4:, 4:], instance_map[:4, 4:] = 1, 2, 3
    samples = [("a", np.zeros((8, 8, 3), np.uint8), instance_map)]
    assert instance_structure(OracleEncoder([instance_map]), samples).ari == 1.0
    noisy = instance_structure(OracleEncoder([instance_map], noise=10.0), samples)
    assert noisy.ari < 0.5 and noisy.images == 1
    clusters = kmeans(torch.eye(3).repeat(5, 1), 3, seed=0)
    assert len(np.unique(clusters)) == 3


def test_masks_hide_the_requested_share():
    masks = random_masks(3, 16, 0.25, torch.Generator().manual_seed(0))
    assert masks.shape == (3, 16) and (masks.sum(dim=1) == 4).all()


def test_pretraining_is_deterministic_changes_the_weights_and_saves_a_loadable_encoder(tmp_path):
    settings = replace(SelfDistillationSettings(), steps=2, batch_size=2, pool_size=4,
                       warmup_steps=1, teacher_momentum=0.5, prototypes=16, head_hidden=16,
                       head_bottleneck=8)
    world = ToyWorldConfig(image_size=128)

    def run():
        torch.manual_seed(0)
        return pretrain_dinov2(Dinov2Model(tiny_dinov2_config()), world, settings, seed=1,
                               progress=False)

    first, history = run()
    second, _ = run()
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    initial = Dinov2Model(tiny_dinov2_config()).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in first.state_dict().items())
    folder = save_dinov2_folder(first, tmp_path / "dinov2")
    encoder = FrozenDinov2Encoder(str(folder), image_size=128)
    assert encoder(torch.rand(1, 3, 128, 128)).shape == (1, 256, 64)


def test_the_committed_pretrained_dinov2_loads_and_matches_its_params():
    """models/toy/dinov2 is what `dvc repro configs/toy-pretrain/dvc.yaml` wrote, committed so
    that a fresh machine has it; its record must name the params the graph holds now."""
    import json
    from pathlib import Path

    from glass.params import load_params, read_section, read_seed
    from glass.pretrain.params import PretrainParams

    repo = Path(__file__).resolve().parents[1]
    folder = repo / "models" / "toy" / "dinov2"
    record = json.loads((folder / "pretraining.json").read_text())
    params = load_params(repo / "configs" / "toy-pretrain" / "params.yaml")
    assert record["params"] == json.loads(json.dumps(
        read_section(params, "pretrain", PretrainParams).record_for("dinov2")))
    assert record["seed"] == read_seed(params)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size < 20 * 2**20
    encoder = FrozenDinov2Encoder(str(folder), image_size=128)
    assert encoder(torch.rand(1, 3, 128, 128)).shape == (1, 256, 64)
    scores = record["instance_structure"]
    assert scores["trained"]["images"] == scores["random"]["images"] > 0


def test_the_pretraining_params_are_checked_like_a_configuration(tmp_path):
    from pathlib import Path

    import pytest
    import yaml

    from glass.check_params import read_params_file
    from glass.params import ParamsError

    path = Path(__file__).resolve().parents[1] / "configs" / "toy-pretrain" / "params.yaml"
    sections = read_params_file(path)
    assert sections["pretrain"].dinov2.steps >= 1 and sections["seed"] == 0
    broken = yaml.safe_load(path.read_text())
    broken["pretrain"]["dinov2"]["crop_scale"] = [0.9, 0.5]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(ParamsError, match="pretrain.dinov2.crop_scale"):
        read_params_file(tmp_path / "params.yaml")
