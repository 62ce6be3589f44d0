"""The evaluation's two stages — predict (glass.eval.predict: the model over the images) and
evaluate (glass.eval.run: metrics of the stored predictions) — on a tiny trained folder and a
tiny toy world, and the paper configuration's input validation."""

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glass.data.params import DataParams
from glass.data.toy_world import ToyWorldConfig, write_coco_dataset
from glass.eval import predict as eval_predict
from glass.eval import run as eval_run
from glass.eval.params import EvaluateParams
from glass.params import ParamsError, load_params, read_section


def _predict(params, model, prepared, out, **kwargs):
    evaluate = read_section(params, "evaluate", EvaluateParams)
    return eval_predict.run_prediction(evaluate, read_section(params, "data", DataParams), model,
                                       prepared, out / "predictions", out / "scratch",
                                       out / "generation.json", out / "images" / "generation",
                                       **kwargs)


def _measure(params, out, metrics, **kwargs):
    return eval_run.run_evaluation(read_section(params, "evaluate", EvaluateParams),
                                   out / "predictions", out, metrics,
                                   generation_path=out / "generation.json", **kwargs)


def _evaluate(params, model, prepared, out, metrics, config_name="", **kwargs):
    """Both stages' calls, as DVC runs them: predict, then evaluate."""
    _predict(params, model, prepared, out, **kwargs)
    return _measure(params, out, metrics, config_name=config_name)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, random_trained_model, one_torch_thread):
    root = tmp_path_factory.mktemp("evaluate")
    write_coco_dataset(root / "prepared" / "toy", ToyWorldConfig(image_size=64),
                       {"train": 10, "val": 6}, seed=0, progress=False)
    params = load_params(REPO / "configs/cpu/params.yaml")
    evaluate = params["evaluate"]
    evaluate["preprocess"]["resolution"] = 64
    evaluate["generation"].update(images=3, num_inference_steps=2)
    evaluate["composition"].update(images=2, num_inference_steps=2)
    evaluate["metrics"]["probes"].update(max_epochs=3)
    return root, params, random_trained_model


def test_evaluation_writes_metrics_curves_grids_and_report(setup):
    root, params, model = setup
    out, metrics_path = root / "eval", root / "metrics" / "evaluate.json"
    returned = _evaluate(params, model, root / "prepared", out, metrics_path, config_name="cpu")
    metrics = json.loads(metrics_path.read_text())
    assert returned == metrics
    discovery = metrics["object_discovery"]["toy_val"]
    for key in ("miou_i", "mbo_i", "miou_c", "mbo_c", "fg_ari", "miou_i_per_object", "so", "po",
                "go", "bg"):
        assert 0.0 <= discovery[key] <= 1.0, key
    assert discovery["images"] == 6
    assert discovery["mbo_i"] >= discovery["miou_i"] - 1e-9
    assert abs(discovery["so"] + discovery["po"] + discovery["go"] + discovery["bg"] - 1) < 1e-9
    # the predict stage's metrics: generation
    generation = json.loads((out / "generation.json").read_text())["generation"]["toy_val"]
    assert generation["images"] == 3 and generation["psnr"] > 0 and generation["dinov2_fd"] >= 0
    assert generation["dinov2_fd"] == round(generation["dinov2_fd"], 4)   # stable in the lock
    # no Inception / AlexNet weights here: null in the metrics, the reason beside them
    assert generation["fid"] is None and generation["lpips"] is None
    assert not any(key.endswith("_unavailable") for key in generation)
    reasons = json.loads((out / "conventions.json").read_text())["unavailable"]
    assert "not found" in reasons["generation.toy_val.fid"]
    assert metrics["unreadable_images"] == {"toy_val": 0, "toy_train": 0}
    probe = metrics["property_prediction"]["toy_val"]
    assert 0.0 <= probe["class_top1"] <= 1.0 and probe["test_objects"] > 0
    # the chance rows beside them, so that a probe at chance reads as one
    assert 0.0 < probe["class_top1_majority"] <= 1.0 and probe["centre_mse_mean"] > 0.0
    with open(out / "curves" / "toy_val.csv") as handle:
        curve = list(csv.DictReader(handle))
    found = [float(row["objects_found"]) for row in curve]
    assert float(curve[0]["threshold"]) == 0.0 and found[0] == 1.0
    assert all(a >= b for a, b in zip(found, found[1:]))   # a share that can only fall
    for grid in ("discovery/slots_toy_val", "generation/reconstruction_toy_val",
                 "generation/composition_toy_val"):
        assert (out / "images" / f"{grid}.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "toy_val" in report and "unavailable: " in report and "38.9" in report


def test_conventions_change_the_numbers_without_running_the_model_again(setup, monkeypatch):
    root, params, model = setup
    params = copy.deepcopy(params)
    for task in ("generation", "property_prediction", "composition"):
        params["evaluate"][task]["enabled"] = False
    out = root / "eval-conventions"
    _predict(params, model, root / "prepared", out)

    def no_models(*args, **kwargs):
        raise AssertionError("the evaluate stage loaded a model")

    monkeypatch.setattr(eval_predict.GlassModel, "from_pretrained", no_models)
    results = {}
    for include_background in (True, False):
        params["evaluate"]["metrics"]["conventions"]["include_background"] = include_background
        results[include_background] = _measure(params, out, out / f"m-{include_background}.json")
    with_bg, without_bg = (results[b]["object_discovery"]["toy_val"] for b in (True, False))
    assert with_bg["miou_i"] != without_bg["miou_i"]
    assert with_bg["fg_ari"] == without_bg["fg_ari"]   # FG-ARI leaves background out anyway
    # disabled tasks leave no section
    assert set(results[True]) == {"object_discovery", "unreadable_images"}
    recorded = json.loads((out / "conventions.json").read_text())
    assert recorded["discovery"]["include_background"] is False
    # the MLP decoder's masks were stored too: another mask source needs no model either
    params["evaluate"]["metrics"]["conventions"]["mask_source"] = "mlp_decoder"
    decoder = _measure(params, out, out / "m-decoder.json")["object_discovery"]["toy_val"]
    assert decoder["miou_i"] != without_bg["miou_i"]
    # ground-truth conventions too: crowd regions (none in the toy world) and overlaps
    params["evaluate"]["metrics"]["ground_truth"]["toy_val"] = {"overlap": "ignore"}
    assert _measure(params, out, out / "m-gt.json")["object_discovery"]["toy_val"]["images"] == 6


def test_paper_configuration_lists_every_missing_input_before_loading_models(tmp_path, monkeypatch):
    params = load_params(REPO / "params.yaml")
    params["data"]["coco"]["root"] = str(tmp_path / "no-coco")
    params["evaluate"]["datasets"]["voc_val"]["root"] = str(tmp_path / "no-voc")
    params["evaluate"]["datasets"]["clevrtex"]["root"] = str(tmp_path / "no-clevrtex")
    params["evaluate"]["datasets"]["objects365"]["root"] = str(tmp_path / "no-objects365")

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were validated")

    monkeypatch.setattr(eval_predict.GlassModel, "from_pretrained", no_models)
    with pytest.raises(FileNotFoundError) as error:
        _predict(params, tmp_path / "model", tmp_path / "prepared", tmp_path / "out",
                 models=tmp_path / "models")
    message = str(error.value)
    for missing in ("no-coco", "no-voc", "no-clevrtex", "no-objects365", "glass.json"):
        assert missing in message, missing
    assert not (tmp_path / "out").exists()


def test_hub_weights_missing_from_the_cache_are_named(tmp_path, monkeypatch):
    model = tmp_path / "model"
    for module in ("slot_attention", "mlp_decoder"):
        (model / module).mkdir(parents=True)
        (model / module / "config.json").write_text("{}")
    (model / "glass.json").write_text(json.dumps({
        "_class_name": "GlassModel", "format": 1, "phase": 1,
        "components": {"slot_attention": "SlotAttention", "mlp_decoder": "MLPDecoder"},
        "encoder": {"source": "hub", "id": "facebook/dinov2-base"},
        "stable_diffusion": {"source": "local", "path": "../gone"},
        "encoder_image_size": 448, "decoder_image_size": 256}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    problems = eval_predict.folder_problems(model)
    assert any("facebook/dinov2-base" in p and "hf download facebook/dinov2-base" in p for p in problems)
    assert any("gone" in p and "models stage" in p for p in problems)


def test_stage_script_fails_cleanly_on_the_paper_configuration(tmp_path):
    result = subprocess.run(
        [sys.executable, "stages/predict.py", "--params", "params.yaml", "--model",
         str(tmp_path / "model"), "--prepared", str(tmp_path / "prepared"), "--models",
         str(tmp_path / "models"), "--out", str(tmp_path / "out"), "--scratch",
         str(tmp_path / "scratch"), "--metrics", str(tmp_path / "metrics.json"), "--images",
         str(tmp_path / "images")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the evaluation cannot start" in result.stderr and "Traceback" not in result.stderr
    measured = subprocess.run(
        [sys.executable, "stages/evaluate.py", "--params", "params.yaml", "--predictions",
         str(tmp_path / "out"), "--generation", str(tmp_path / "metrics.json"), "--out",
         str(tmp_path / "eval"), "--metrics", str(tmp_path / "evaluate.json")], cwd=REPO,
        capture_output=True, text=True)
    assert measured.returncode == 2 and "run the predict stage first" in measured.stderr


def test_the_encoder_gets_its_own_view_of_the_original_image():
    from glass.eval.datasets import EvalSample, Preprocess

    # a smooth image, so that two resamplings of the same region agree closely
    ys, xs = np.mgrid[0:300, 0:400]
    image = np.stack([xs / 400 * 255, ys / 300 * 255, (xs + ys) / 700 * 255], -1).astype(np.uint8)
    instances = np.zeros((300, 400), np.int32)
    instances[100:200, 150:250] = 1
    sample = EvalSample("k", image, instances, {1: "kite"}, np.zeros((300, 400), bool))
    out = Preprocess(resolution=256, model_resolution=448)(sample)
    assert out.image.shape == (256, 256, 3) and out.model_image.shape == (448, 448, 3)
    # the same centre region: the model view brought down to 256 matches the evaluation image
    from PIL import Image

    down = np.asarray(Image.fromarray(out.model_image).resize((256, 256), Image.BILINEAR))
    assert np.abs(down.astype(int) - out.image.astype(int)).mean() < 2.0
    assert Preprocess(resolution=256)(sample).model_image is None


def test_an_empty_dataset_or_a_bad_convention_is_reported_before_loading(setup, monkeypatch):
    root, params, model = setup
    params = copy.deepcopy(params)
    params["evaluate"]["metrics"]["conventions"]["mask_source"] = "decoder"
    with pytest.raises(ParamsError, match="evaluate.metrics.conventions.mask_source: must be one "
                                          "of"):
        read_section(params, "evaluate", EvaluateParams)
    params["evaluate"]["metrics"]["conventions"]["mask_source"] = "mlp_decoder"
    params["evaluate"]["datasets"]["toy_val"]["limit"] = 0

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were validated")

    monkeypatch.setattr(eval_predict.GlassModel, "from_pretrained", no_models)
    with pytest.raises(FileNotFoundError) as error:
        _predict(params, model, root / "prepared", root / "bad")
    assert "toy_val" in str(error.value) and "holds no images" in str(error.value)
