import pytest

from glass.text.prompts import (build_prompt, build_prompt_records, normalise_caption,
                                prompt_record, prompt_statistics)


def fake_extract(caption):
    return [w for w in ("dog", "cat") if w in caption]


def test_prompt_format_is_caption_semicolon_classes():
    # Dataset Diffusion's stored prompts look like "A bunch of people at the ocean about to surf.;
    # person bird surfboard" (docs/paper-facts.md)
    assert build_prompt("A dog and a cat.", ["dog", "cat"]) == "A dog and a cat.; dog cat"
    assert build_prompt("A field.", []) == "A field."


def test_normalise_caption():
    assert normalise_caption("  a  dog;\n a cat\t") == "a dog, a cat"
    assert normalise_caption("ﬁne café") == "fine café"  # NFKC folds the ligature
    assert normalise_caption("a\x00dog") == "a dog"


def test_classes_from_the_record_win_over_extraction():
    record = {"image_id": "1", "backend": "labels", "caption": "A photo of a dog.",
              "classes": ["stop sign", "dog", "dog"]}
    out = prompt_record(record, fake_extract, 300)
    assert out["classes"] == ["stop sign", "dog"] and out["class_source"] == "caption record"
    assert out["prompt"] == "A photo of a dog.; stop sign dog"
    with pytest.raises(ValueError, match="not one of the 80 COCO"):
        prompt_record(record | {"classes": ["unicorn"]}, fake_extract, 300)


@pytest.mark.parametrize("caption,reason", [
    ("", "empty caption"), ("   \n\t", "empty caption"), ("x" * 5000, "5000 characters"),
    (None, "not a string"),
])
def test_unusable_captions_become_recorded_skips(caption, reason):
    out = prompt_record({"image_id": "7", "backend": "blip2", "caption": caption}, fake_extract, 300)
    assert reason in out["skipped"] and out["image_id"] == "7" and "prompt" not in out


def test_upstream_skips_pass_through_with_their_reason():
    out = prompt_record({"image_id": "7", "backend": "blip2", "skipped": "file not found"},
                        fake_extract, 300)
    assert out["skipped"] == "caption stage: file not found"


def test_non_ascii_caption_and_statistics():
    records = build_prompt_records([
        {"image_id": "a", "backend": "blip2", "caption": "un chien — dog 🐕 and cat"},
        {"image_id": "b", "backend": "blip2", "caption": "a mountain"},
        {"image_id": "c", "backend": "blip2", "caption": ""},
        {"image_id": "d", "backend": "blip2", "caption": "y" * 400},
    ], fake_extract, 300)
    assert records[0]["prompt"] == "un chien — dog 🐕 and cat; dog cat"
    assert records[1]["classes"] == [] and records[1]["prompt"] == "a mountain"
    metrics, counts = prompt_statistics(records)
    assert metrics["records"] == 4 and metrics["prompts"] == 2 and metrics["skipped"] == 2
    assert metrics["with_classes"] == 1 and metrics["without_classes"] == 1
    assert metrics["skip_reasons"] == {
        "caption has N characters, more than prompts.max_caption_chars = N": 1, "empty caption": 1}
    assert counts == {"cat": 1, "dog": 1}
