"""Importing the authors' released checkpoint layout (glass.convert), checked against outputs of
the official slot-attention module computed once outside the repository
(tests/data/official_golden/golden.json says how)."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from glass.convert import convert_official, main, official_grid
from glass.errors import InvalidInput, MissingInput
from glass.model import GlassModel, read_index, slot_masks_to_labels
from glass.model.inference import upsample_masks

GOLDEN = Path(__file__).parent / "data" / "official_golden"


def golden_meta() -> dict:
    return json.loads((GOLDEN / "golden.json").read_text())


def official_weights(meta: dict) -> dict[str, torch.Tensor]:
    """The synthetic checkpoint's tensors by the recorded rule (random, official key names)."""
    weights = {}
    for entry in sorted(meta["state_dict"], key=lambda e: e["key"]):
        key, shape = entry["key"], tuple(entry["shape"])
        if key == "pos.pe":
            weights[key] = official_grid(shape[-1]).contiguous()
            continue
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        value = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if entry["layernorm_weight"]:
            value = np.float32(1) + value
        weights[key] = torch.from_numpy(value)
    return weights


def write_official_checkpoint(folder: Path, *, unet_from: Path | None = None,
                              config_changes: dict | None = None,
                              drop: str | None = None) -> Path:
    """A checkpoint in the release's layout: multiheadstevesa/ (+ unet2dconditionmodel/)."""
    meta = golden_meta()
    slot_dir = folder / "multiheadstevesa"
    slot_dir.mkdir(parents=True)
    config = dict(meta["config"], **(config_changes or {}))
    (slot_dir / "config.json").write_text(json.dumps(config))
    weights = official_weights(meta)
    if drop:
        del weights[drop]
    save_file(weights, str(slot_dir / "diffusion_pytorch_model.safetensors"))
    if unet_from is not None:
        from diffusers import UNet2DConditionModel

        UNet2DConditionModel.from_pretrained(unet_from, subfolder="unet").save_pretrained(
            folder / "unet2dconditionmodel")
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    checkpoint = write_official_checkpoint(root / "checkpoint")
    return convert_official(checkpoint, root / "converted")


def test_converted_slot_attention_matches_the_official_outputs(converted):
    model = GlassModel.from_pretrained(converted, with_encoder=False)
    features = torch.from_numpy(
        np.random.default_rng(1234).standard_normal((2, 1024, 768)).astype(np.float32))
    with torch.no_grad():
        output = model.slot_attention(features, generator=torch.Generator().manual_seed(0))
    golden = np.load(GOLDEN / "outputs.npz")
    np.testing.assert_allclose(output.conditioning.numpy(), golden["slots"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(output.slots.numpy(), golden["slots_before_projection"],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(output.attention.transpose(1, 2).numpy(), golden["attention"],
                               atol=1e-5, rtol=0)
    labels = slot_masks_to_labels(upsample_masks(output.attention, (32, 32), (256, 256)))
    agree = (labels.numpy() == golden["labels_256"]).mean()
    assert agree > 0.999   # argmax ties at float round-off may flip a handful of pixels


def test_converted_folder_records_the_paper_models_and_no_mlp_decoder(converted):
    index = read_index(converted)
    assert index.origin == "official" and index.phase == 1
    assert index.components == {"slot_attention": "SlotAttention"}
    assert index.encoder.as_dict() == {"source": "hub", "id": "facebook/dinov2-base"}
    assert index.stable_diffusion.value == "stabilityai/stable-diffusion-2-1"
    assert (index.encoder_image_size, index.decoder_image_size) == (448, 256)
    config = json.loads((converted / "slot_attention" / "config.json").read_text())
    assert (config["num_slots"], config["num_iterations"], config["epsilon"],
            config["output_dim"], config["grid_size"]) == (7, 5, 1e-6, 1024, [32, 32])


def test_phase_two_release_keeps_its_unet(tmp_path, tiny_sd_path):
    # the tiny SD's UNet has another cross-attention width: the check names both numbers
    checkpoint = write_official_checkpoint(tmp_path / "st2", unet_from=tiny_sd_path)
    with pytest.raises(InvalidInput, match="cross_attention_dim"):
        convert_official(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_broken_checkpoints_are_named(tmp_path):
    with pytest.raises(MissingInput, match="multiheadstevesa"):
        convert_official(tmp_path / "nothing", tmp_path / "out")
    bad = write_official_checkpoint(tmp_path / "bad", drop="gru.bias_hh")
    with pytest.raises(InvalidInput, match=r"missing \['gru.bias_hh'\]"):
        convert_official(bad, tmp_path / "out")
    options = write_official_checkpoint(tmp_path / "options",
                                        config_changes={"learnable_slot_init": True})
    with pytest.raises(InvalidInput, match="learnable_slot_init"):
        convert_official(options, tmp_path / "out")


def official_checkpoint_for(folder: Path, encoder, unet_dir: Path, num_slots: int = 4) -> Path:
    """A seeded random checkpoint in the release's layout (official config keys and state-dict
    names) sized for ``encoder`` and the UNet in ``unet_dir``: what the CPU configuration can
    evaluate through the same conversion."""
    from diffusers import UNet2DConditionModel

    from glass.convert import CHANNEL_ORDER, RENAMED
    from glass.model.slot_attention import SlotAttention

    unet = UNet2DConditionModel.from_pretrained(unet_dir, subfolder="unet")
    side = encoder.grid_size[0]
    official_config = {"_class_name": "MultiHeadSTEVESA", "bi_level": False, "epsilon": 1e-6,
                       "input_resolution": side, "input_size": encoder.feature_dim,
                       "learnable_slot_init": False, "mlp_hidden_size": 16, "num_heads": 1,
                       "num_iterations": 3, "num_slots": num_slots, "slot_size": 16,
                       "out_size": unet.config.cross_attention_dim}
    torch.manual_seed(0)
    ours = SlotAttention(input_dim=encoder.feature_dim, grid_size=[side, side],
                         num_slots=num_slots, num_iterations=3, slot_size=16, mlp_hidden_size=16,
                         output_dim=unet.config.cross_attention_dim).state_dict()
    state = {name: ours[mine] for name, mine in RENAMED.items()}
    inverse = [CHANNEL_ORDER.index(c) for c in range(4)]
    state["pos.projection.weight"] = ours["position_embedding.weight"][:, inverse, None, None]
    state["pos.projection.bias"] = ours["position_embedding.bias"]
    state["pos.pe"] = official_grid(side)
    (folder / "multiheadstevesa").mkdir(parents=True)
    (folder / "multiheadstevesa" / "config.json").write_text(json.dumps(official_config))
    save_file({k: v.contiguous() for k, v in state.items()},
              str(folder / "multiheadstevesa" / "diffusion_pytorch_model.safetensors"))
    unet.save_pretrained(folder / "unet2dconditionmodel")
    return folder


def test_the_evaluation_stages_run_on_a_converted_checkpoint(tmp_path, tiny_sd_path, capsys,
                                                            one_torch_thread):
    from glass.data.params import DataParams
    from glass.data.toy_world import ToyWorldConfig, write_coco_dataset
    from glass.eval import predict as eval_predict
    from glass.eval import run as eval_run
    from glass.eval.params import EvaluateParams
    from glass.model.encoder import FrozenDinov2Encoder
    from glass.params import load_params, read_section
    from glass.tiny.dinov2 import build_tiny_dinov2

    encoder_dir = build_tiny_dinov2(tmp_path / "dinov2")
    encoder = FrozenDinov2Encoder(str(encoder_dir), image_size=64)
    checkpoint = official_checkpoint_for(tmp_path / "glass_st2" / "checkpoint", encoder,
                                         tiny_sd_path)
    main(["official", str(checkpoint), str(tmp_path / "converted"), "--encoder", str(encoder_dir),
          "--stable-diffusion", str(tiny_sd_path), "--encoder-image-size", "64",
          "--decoder-image-size", "48"])
    assert "evaluate.model" in capsys.readouterr().out
    index = read_index(tmp_path / "converted")
    assert index.phase == 2 and index.encoder.source == "local"

    write_coco_dataset(tmp_path / "prepared" / "toy", ToyWorldConfig(image_size=64),
                       {"train": 6, "val": 4}, seed=0, progress=False)
    params = load_params(Path(__file__).resolve().parents[1] / "configs/cpu/params.yaml")
    evaluate = params["evaluate"]
    evaluate["model"] = str(tmp_path / "converted")
    evaluate["preprocess"]["resolution"] = 64
    evaluate["generation"].update(images=2, num_inference_steps=1)
    evaluate["composition"].update(images=2, num_inference_steps=1, mask_source="slot_attention")
    evaluate["property_prediction"]["enabled"] = False
    section = read_section(params, "evaluate", EvaluateParams)
    out = tmp_path / "eval"
    eval_predict.run_prediction(section, read_section(params, "data", DataParams), section.model,
                                tmp_path / "prepared", out / "predictions", tmp_path / "scratch",
                                out / "generation.json", out / "images" / "generation")
    metrics = eval_run.run_evaluation(section, out / "predictions", out, out / "evaluate.json",
                                      generation_path=out / "generation.json")
    discovery = metrics["object_discovery"]["toy_val"]
    assert discovery["images"] == 4 and 0 <= discovery["miou_i"] <= 1
    assert json.loads((out / "generation.json").read_text())["generation"]["toy_val"]["psnr"] > 0
    # the release has no MLP decoder: asking for its masks says so, without a model run
    evaluate["metrics"]["conventions"]["mask_source"] = "mlp_decoder"
    with pytest.raises(InvalidInput, match="no MLP decoder"):
        eval_run.run_evaluation(read_section(params, "evaluate", EvaluateParams),
                                out / "predictions", out, out / "again.json")
