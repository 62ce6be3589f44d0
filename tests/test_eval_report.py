"""Paper numbers (glass.eval.paper_numbers) and the markdown comparison report (glass.eval.report)."""

from collections import Counter

import pytest

from glass.eval.paper_numbers import (DATASETS, METRICS, PAPER_NUMBERS, TASKS, UNITS, VARIANTS,
                                      PaperNumber, paper_number, paper_numbers)
from glass.eval.report import render_report


def _value(dataset, metric, variant):
    number = paper_number(dataset, metric, variant)
    assert number is not None, (dataset, metric, variant)
    return number


@pytest.mark.parametrize("table,dataset,metric,variant,value,unit", [
    # docs/paper-facts.md "Evaluation": Table 2 GLASS† (second GLASS row)
    ("Table 2", "coco_val", "miou_i", "GLASS†", 38.9, "%"),
    ("Table 2", "coco_val", "mbo_i", "GLASS†", 40.6, "%"),
    ("Table 2", "coco_val", "mbo_c", "GLASS†", 48.5, "%"),
    ("Table 2", "voc_val", "miou_i", "GLASS†", 58.1, "%"),
    ("Table 2", "voc_val", "mbo_i", "GLASS†", 58.9, "%"),
    ("Table 2", "voc_val", "mbo_c", "GLASS†", 62.2, "%"),
    # Table 7: FID on 512 COCO images, second row
    ("Table 7", "coco_val", "fid", "GLASS†", 71.30, "unitless"),
    # Table 8: single GLASS row, VOC | COCO columns
    ("Table 8", "coco_val", "class_top1", "GLASS", 20.8, "%"),
    ("Table 8", "coco_val", "centre_mse", "GLASS", 0.059, "unitless"),
    # Table 11: VOC | COCO columns, second row
    ("Table 11", "coco_val", "fg_ari", "GLASS†", 34.1, "%"),
    ("Table 11", "voc_val", "fg_ari", "GLASS†", 22.5, "%"),
])
def test_anchor_numbers(table, dataset, metric, variant, value, unit):
    number = _value(dataset, metric, variant)
    assert (number.table, number.value, number.unit) == (table, value, unit)


def test_other_variant_rows_and_column_layouts():
    assert _value("coco_val", "miou_i", "GLASS").value == 39.0          # Table 2 first row
    assert _value("voc_val", "mbo_c", "GLASS").value == 61.5
    assert _value("coco_val", "fid", "GLASS").printed == "79.61"         # Table 7 first row
    assert _value("coco_val", "psnr", "GLASS†").unit == "dB"
    assert _value("voc_val", "fg_ari", "GLASS").value == 21.3            # Table 11: VOC first
    assert _value("coco_val", "fg_ari", "GLASS").value == 32.5
    assert _value("voc_val", "class_top1", "GLASS").value == 58.1        # Table 8: VOC first
    assert _value("voc_val", "go", "GLASS").printed == "0.67"            # Table 3: COCO | VOC
    assert _value("coco_val", "go", "GLASS†").printed == "0.00"
    assert _value("objects365", "mbo_i", "GLASS").value == 22.4          # Table 4
    assert _value("clevrtex", "miou_i", "GLASS†").value == 46.1
    assert _value("coco_val", "miou_c", "GLASS-Sem").value == 46.7       # Table 9: COCO | VOC
    assert _value("voc_val", "miou_c", "GLASS-Sem").value == 68.9
    assert paper_number("coco_val", "miou_c", "GLASS") is None
    assert paper_number("coco_val", "class_top1", "GLASS†") is None


def test_paper_numbers_are_unique_and_well_formed():
    keys = Counter((n.table, n.dataset, n.metric, n.variant) for n in PAPER_NUMBERS)
    assert not [k for k, c in keys.items() if c > 1]
    lookup = Counter((n.task, n.dataset, n.metric, n.variant) for n in PAPER_NUMBERS)
    assert not [k for k, c in lookup.items() if c > 1]
    for n in PAPER_NUMBERS:
        assert isinstance(n, PaperNumber)
        assert n.task in TASKS and n.dataset in DATASETS and n.metric in METRICS
        assert n.variant in VARIANTS and n.unit in UNITS
        assert n.printed and float(n.printed) == n.value
        if n.unit == "%":
            assert 0.0 <= n.value <= 100.0
    assert {n.table for n in PAPER_NUMBERS} == {f"Table {i}" for i in (2, 3, 4, 7, 8, 9, 11)}
    assert len(paper_numbers(table="Table 2")) == 12
    assert len(paper_numbers(table="Table 3")) == 12
    with pytest.raises(ValueError):
        PaperNumber("Table 2", "object_discovery", "coco_val", "miou_i", "GLASS*", 1.0, "%")
    with pytest.raises(ValueError):
        PaperNumber("Table 2", "object_discovery", "coco_val", "miou_i", "GLASS", 1.0, "%", "2.0")


SAMPLE = {
    "object_discovery": {
        "coco_val": {"miou_i": 0.3456, "mbo_i": 0.4, "miou_c": 0.5, "mbo_c": 0.25, "fg_ari": 0.341,
                     "miou_i_per_object": 0.3, "mbo_i_per_object": 0.31, "so": 0.2, "po": 0.5,
                     "go": 0.001, "bg": 0.299, "images": 5000},
        "toy_val": {"miou_i": 0.592, "mbo_i": 0.647, "so": 0.25, "images": 100},
    },
    "generation": {
        "toy_val": {"psnr": 12.345, "ssim": 0.4567, "lpips": None,
                    "lpips_unavailable": "LPIPS weights missing | offline", "fid": None,
                    "fid_unavailable": "needs 512 images, got 100", "dinov2_fd": 3.5,
                    "images": 100},
    },
    "property_prediction": {
        "toy_val": {"class_top1": 0.625, "centre_mse": 0.01234, "train_objects": 300,
                    "test_objects": 120},
    },
}
CONVENTIONS = {"include_background": True, "averaging": "per_image", "crowd": "ignore",
               "overlap": "ignore", "voc_boundary": "ignore", "resolution": 256,
               "mask_source": "slot_attention"}


def _rows(report):
    return [line for line in report.splitlines() if line.startswith("| ")]


def _row(report, dataset, label):
    hits = [r for r in _rows(report) if r.startswith(f"| {dataset} | {label} |")]
    assert len(hits) == 1, (dataset, label, hits)
    return [c.strip() for c in hits[0].strip("|").split(" | ")]


def test_report_converts_to_percent_and_shows_paper_columns():
    report = render_report(SAMPLE, CONVENTIONS, "paper")
    assert _row(report, "coco_val", "mIoU_i") == [
        "coco_val", "mIoU_i", "%", "34.56", "39.0", "38.9", "—", "Table 2"]
    assert _row(report, "coco_val", "FG-ARI")[3:] == ["34.10", "32.5", "34.1", "—", "Table 11"]
    assert _row(report, "coco_val", "mIoU_c")[3:] == ["50.00", "—", "—", "46.7", "Table 9"]
    assert _row(report, "coco_val", "GO")[3:] == ["0.10", "0.01", "0.00", "—", "Table 3"]
    assert _row(report, "coco_val", "images")[3:] == ["5000", "—", "—", "—", "—"]
    # paper datasets we have no results for still appear, with our value missing
    assert _row(report, "clevrtex", "mIoU_i")[3:] == ["—", "47.2", "46.1", "—", "Table 4"]
    assert _row(report, "coco_val", "FID")[3:] == ["—", "79.61", "71.30", "Table 7"]
    assert _row(report, "coco_val", "centre MSE")[3:] == ["—", "0.059", "—", "Table 8"]
    for key, value in CONVENTIONS.items():
        assert f"- {key}: " in report
    assert "- include_background: true" in report and "- averaging: per_image" in report
    assert "Configuration: `paper`" in report
    assert "not comparable" in report
    assert "x100 in %" in report


def test_report_toy_world_unavailable_and_cpu_warning():
    report = render_report(SAMPLE, CONVENTIONS, "cpu")
    assert _row(report, "toy_val", "mIoU_i")[3:] == ["59.20", "—", "—", "—", "—"]
    assert _row(report, "toy_val", "PSNR")[2:] == ["dB", "12.35", "—", "—", "—"]
    assert _row(report, "toy_val", "SSIM")[3] == "0.457"
    assert _row(report, "toy_val", "LPIPS")[3] == "unavailable: LPIPS weights missing \\| offline"
    assert _row(report, "toy_val", "FID")[3] == "unavailable: needs 512 images, got 100"
    assert _row(report, "toy_val", "class top-1 accuracy")[3:] == ["62.50", "—", "—", "—"]
    assert _row(report, "toy_val", "centre MSE")[3] == "0.0123"
    assert "**This report comes from the CPU configuration" in report
    assert "NOT comparable" in report


def test_report_handles_missing_sections_and_is_deterministic():
    first = render_report(SAMPLE, CONVENTIONS, "cpu")
    # same content, different insertion order: identical bytes
    shuffled = {k: {d: dict(reversed(list(v.items()))) for d, v in reversed(list(s.items()))}
                for k, s in reversed(list(SAMPLE.items()))}
    second = render_report(shuffled, dict(reversed(list(CONVENTIONS.items()))), "cpu")
    assert first.encode() == second.encode()
    assert first == render_report(SAMPLE, CONVENTIONS, "cpu")
    empty = render_report({}, {}, "paper")
    assert "- (none recorded)" in empty
    assert empty.count("No results of ours for this section") == 3
    assert _row(empty, "voc_val", "mBO_c")[3:] == ["—", "61.5", "62.2", "—", "Table 2"]
    assert empty.endswith("\n") and not empty.endswith("\n\n")
