import numpy as np
import pytest

from glass.synth.generator import SkipSample, SynthSample, synthesis_seed
from glass.synth.toy_generator import mark_boundaries_unsure
from typed_params import toy_generator


def test_boundary_band_marks_both_sides_of_every_label_change():
    labels = np.zeros((7, 7), dtype=np.int32)
    labels[:, 4:] = 2
    banded = mark_boundaries_unsure(labels, band=1)
    assert (banded[:, 3:5] == 255).all()
    assert (banded[:, :3] == 0).all() and (banded[:, 5:] == 2).all()
    np.testing.assert_array_equal(mark_boundaries_unsure(labels, band=0), labels)


def test_toy_sample_has_the_prompt_classes_and_an_exact_mask_inside_objects():
    generator = toy_generator({"image_size": 64, "unsure_band": 1})
    record = {"key": "toy-train-000000000001", "prompt": "A photo of two kites and a tv.; kite tv",
              "caption": "A photo of two kites and a tv.", "classes": ["kite", "tv"]}
    sample = generator.generate(record, synthesis_seed(0, record["key"]))
    assert isinstance(sample, SynthSample) and sample.classes == ["kite", "tv"]
    assert set(np.unique(sample.mask)) <= {0, 1, 2, 255}
    assert {1, 2} <= set(np.unique(sample.mask).tolist())
    assert sample.metadata["label_to_coco_id"] == {"1": 38, "2": 72}
    again = generator.generate(record, synthesis_seed(0, record["key"]))
    assert np.array_equal(sample.image, again.image) and np.array_equal(sample.mask, again.mask)
    # the unsure band stays thin: most of the image keeps a definite label
    assert (sample.mask == 255).mean() < 0.25


def test_prompts_the_toy_world_cannot_draw_are_skipped_with_a_reason():
    generator = toy_generator({"image_size": 64})
    results = generator.generate_batch(
        [{"key": "a", "classes": ["giraffe"]}, {"key": "b", "classes": []},
         {"key": "c", "classes": ["pizza"]}], [1, 2, 3])
    assert isinstance(results[0], SkipSample) and "giraffe" in str(results[0])
    assert isinstance(results[1], SkipSample)
    assert isinstance(results[2], SynthSample)
    with pytest.raises(ValueError):
        toy_generator({"image_size": 64, "unsure_band": -1})
