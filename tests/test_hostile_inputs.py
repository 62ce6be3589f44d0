"""The project's hostile corpus (tests/hostile_corpus.py) through the real stages: prepare,
caption (BLIP-2 on the images, the dataset's own captions), prompts and evaluate, each run as
DVC runs it (``python stages/<stage>.py``). Every file must be used or skipped with its reason,
and no stage may fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glass.io import read_jsonl
from glass.models import ModelSpec, materialize_model
from hostile_corpus import HOSTILE_CAPTIONS, PIXEL_LIMIT, write_hostile_coco

REPO = Path(__file__).resolve().parents[1]


def _stage(name: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, f"stages/{name}.py", *args], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
    return result


def _params(tmp: Path, root: Path, backend: str) -> Path:
    params = yaml.safe_load((REPO / "configs/cpu/params.yaml").read_text())
    params["data"].update(dataset="coco", max_images=None)
    params["data"]["coco"].update(root=str(root), caption_split="train2017", eval_split="val2017")
    params["caption"].update(backend=backend, max_image_pixels=PIXEL_LIMIT)
    evaluate = params["evaluate"]
    evaluate.update(device="cpu", max_image_pixels=PIXEL_LIMIT, limit=None,
                    datasets={"hostile_val": {"kind": "coco", "root": None, "split": None}},
                    object_discovery=["hostile_val"])
    evaluate["metrics"]["ground_truth"] = {"hostile_val": {"crowd": "skip",
                                                           "overlap": "later_wins"}}
    evaluate["preprocess"]["resolution"] = 32
    for task in ("generation", "property_prediction", "composition"):
        evaluate[task]["enabled"] = False
    path = tmp / f"params-{backend}.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    cases, captions = write_hostile_coco(tmp / "coco")
    out = tmp / "out"
    params = _params(tmp, tmp / "coco", "blip2")
    _stage("prepare", "--params", str(params), "--out", str(out / "prepared"))
    materialize_model("blip2", ModelSpec(tiny=True, seed=0), out / "models" / "blip2")
    return tmp, out, params, cases, captions


def _image_id(index: int) -> str:
    return f"coco-train2017-{index:012d}"


def test_prepare_writes_valid_utf8_and_repairs_surrogates(corpus):
    _, out, _, cases, captions = corpus
    raw = (out / "prepared" / "index_caption.jsonl").read_bytes()
    raw.decode("utf-8")   # valid UTF-8, although the captions JSON held a lone surrogate
    index = {r["image_id"]: r for r in read_jsonl(out / "prepared" / "index_caption.jsonl")}
    assert len(index) == len(cases)
    surrogate = next(i for i, c in captions.items() if c.name == "surrogate")
    assert index[_image_id(surrogate)]["captions"] == ["A dog \ufffd on a sofa."]
    assert "surrogate" in " ".join(index[_image_id(surrogate)]["notes"])
    not_text = next(i for i, c in captions.items() if c.name == "not_text")
    assert index[_image_id(not_text)]["captions"] == []


def test_blip2_captions_or_skips_every_hostile_image_with_its_reason(corpus):
    tmp, out, params, cases, _ = corpus
    _stage("caption", "--params", str(params), "--prepared", str(out / "prepared"), "--out",
           str(out / "captions-blip2.jsonl"), "--scratch", str(tmp / "scratch" / "caption"),
           "--blip2-model", str(out / "models" / "blip2"))
    records = read_jsonl(out / "captions-blip2.jsonl")
    assert len(records) == len(cases)
    for index, case in enumerate(cases, start=1):
        record = records[index - 1]
        assert record["image_id"] == _image_id(index)
        if case.caption_skip is None:
            assert "skipped" not in record and isinstance(record["caption"], str), (case, record)
            notes = " ".join(record.get("notes", []))
            assert case.caption_note in notes, (case, record)
        else:
            assert case.caption_skip in record.get("skipped", ""), (case, record)


def test_hostile_captions_become_prompts_or_skips_with_their_reasons(corpus):
    tmp, out, _, cases, captions = corpus
    params = _params(tmp, tmp / "coco", "dataset")
    _stage("caption", "--params", str(params), "--prepared", str(out / "prepared"), "--out",
           str(out / "captions-dataset.jsonl"), "--scratch", str(tmp / "scratch" / "caption"),
           "--blip2-model", str(out / "models" / "blip2"))
    (out / "captions-dataset.jsonl").read_bytes().decode("utf-8")
    _stage("prompts", "--params", str(params), "--captions", str(out / "captions-dataset.jsonl"),
           "--out", str(out / "prompts.jsonl"), "--stats", str(out / "metrics" / "prompts.json"),
           "--class-counts", str(out / "prompt_class_counts.json"))
    prompts = {r["image_id"]: r for r in read_jsonl(out / "prompts.jsonl")}
    assert len(prompts) == len(cases)
    for index, caption in captions.items():
        record = prompts[_image_id(index)]
        if caption.outcome == "prompt":
            assert record.get("caption") == caption.expect, (caption.name, record)
            # the classes are still found in the cleaned text (sofa is COCO's couch)
            assert record["classes"] == list(caption.classes), (caption.name, record)
        else:
            stage, reason = caption.outcome.split(": ", 1)
            assert reason in record.get("skipped", ""), (caption.name, record)
            assert record["skipped"].startswith("caption stage") == (stage == "caption")
    metrics = json.loads((out / "metrics" / "prompts.json").read_text())
    assert metrics["records"] == len(cases)
    assert {c.name for c in HOSTILE_CAPTIONS} <= {c.name for c in captions.values()}


def test_evaluation_skips_unreadable_images_with_reasons_and_counts_them(corpus,
                                                                         random_trained_model):
    tmp, out, params, cases, _ = corpus
    _stage("predict", "--params", str(params), "--model", str(random_trained_model),
           "--prepared", str(out / "prepared"), "--models", str(out / "models"),
           "--out", str(out / "eval" / "predictions"), "--scratch", str(tmp / "scratch" / "p"),
           "--metrics", str(out / "metrics" / "generation.json"),
           "--images", str(out / "eval" / "images" / "generation"))
    _stage("evaluate", "--params", str(params), "--predictions", str(out / "eval" / "predictions"),
           "--generation", str(out / "metrics" / "generation.json"),
           "--out", str(out / "eval"), "--metrics", str(out / "metrics" / "evaluate.json"))
    expected = {str(index): case for index, case in enumerate(cases, start=1)
                if case.evaluate_skip is not None}
    metrics = json.loads((out / "metrics" / "evaluate.json").read_text())
    assert metrics["unreadable_images"] == {"hostile_val": len(expected)}
    assert metrics["object_discovery"]["hostile_val"]["images"] == len(cases) - len(expected)
    recorded = json.loads((out / "eval" / "conventions.json").read_text())
    unreadable = recorded["unreadable_images"]["hostile_val"]
    assert set(unreadable) == set(expected)
    for image_id, case in expected.items():
        assert case.evaluate_skip in unreadable[image_id], (case, unreadable[image_id])
    assert recorded["datasets"]["hostile_val"]["unreadable_images"] == len(expected)
