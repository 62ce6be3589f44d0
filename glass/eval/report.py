"""Markdown report that puts our evaluation numbers beside the paper's.

``render_report(metrics, conventions, config_name)`` takes the evaluate stage's
``metrics/evaluate.json`` (sections ``object_discovery``, ``generation``, ``property_prediction``,
each ``{dataset: {metric: value}}``; any section or dataset may be absent) and returns markdown:
a header with the configuration and the evaluation conventions, then one table per task with
our value, the paper's GLASS / GLASS† (and GLASS-Sem where it exists) values and the table they
come from (glass.eval.paper_numbers).

Our overlap metrics (mIoU, mBO, FG-ARI) and shares (SO / PO / GO / BG, class accuracy) are stored in
[0, 1]; the report shows them x100 in %, the paper's unit. PSNR stays in dB; SSIM, LPIPS, FID and the
centre MSE are shown as they are. A metric stored as None is shown as "unavailable: <reason>" (the
reason from its sibling ``<metric>_unavailable`` key); a metric that is not there at all is "—".
The output depends only on the arguments (sorted keys, fixed formats, no timestamps).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from glass.eval.paper_numbers import TASKS, PaperNumber, paper_numbers

DASH = "—"
UNAVAILABLE_SUFFIX = "_unavailable"
PAPER_VARIANTS = ("GLASS", "GLASS†", "GLASS-Sem")


@dataclass(frozen=True)
class _Spec:
    label: str
    unit: str           # unit of the shown value (after scaling)
    percent: bool       # stored in [0, 1], shown x100 in %
    fmt: str            # format of the shown value


_PCT = "{:.2f}"
_SPECS: dict[str, _Spec] = {
    "miou_i": _Spec("mIoU_i", "%", True, _PCT),
    "mbo_i": _Spec("mBO_i", "%", True, _PCT),
    "miou_c": _Spec("mIoU_c", "%", True, _PCT),
    "mbo_c": _Spec("mBO_c", "%", True, _PCT),
    "fg_ari": _Spec("FG-ARI", "%", True, _PCT),
    "miou_i_per_object": _Spec("mIoU_i (per object)", "%", True, _PCT),
    "mbo_i_per_object": _Spec("mBO_i (per object)", "%", True, _PCT),
    "so": _Spec("SO", "%", True, _PCT),
    "po": _Spec("PO", "%", True, _PCT),
    "go": _Spec("GO", "%", True, _PCT),
    "bg": _Spec("BG", "%", True, _PCT),
    "psnr": _Spec("PSNR", "dB", False, "{:.2f}"),
    "psnr_mean_colour": _Spec("PSNR, each image's mean colour (reference)", "dB", False,
                              "{:.2f}"),
    "ssim": _Spec("SSIM", "unitless", False, "{:.3f}"),
    "lpips": _Spec("LPIPS", "unitless", False, "{:.3f}"),
    "fid": _Spec("FID", "unitless", False, "{:.2f}"),
    "dinov2_fd": _Spec("FD (DINOv2)", "unitless", False, "{:.2f}"),
    "class_top1": _Spec("class top-1 accuracy", "%", True, _PCT),
    "centre_mse": _Spec("centre MSE", "unitless", False, "{:.4f}"),
    "class_top1_majority": _Spec("class top-1, majority class (chance)", "%", True, _PCT),
    "centre_mse_mean": _Spec("centre MSE, mean centre (chance)", "unitless", False, "{:.4f}"),
    "images": _Spec("images", "count", False, "{:d}"),
    "train_objects": _Spec("train objects", "count", False, "{:d}"),
    "test_objects": _Spec("test objects", "count", False, "{:d}"),
}

# Row order inside a dataset; metrics not listed here follow in sorted order.
_ORDER: dict[str, tuple[str, ...]] = {
    "object_discovery": ("miou_i", "mbo_i", "mbo_c", "miou_c", "fg_ari", "miou_i_per_object",
                         "mbo_i_per_object", "so", "po", "go", "bg", "images"),
    "generation": ("psnr", "psnr_mean_colour", "ssim", "lpips", "fid", "dinov2_fd", "images"),
    "property_prediction": ("class_top1", "class_top1_majority", "centre_mse", "centre_mse_mean",
                            "train_objects", "test_objects"),
}

_TITLES = {
    "object_discovery": "Object discovery",
    "generation": "Conditional generation / reconstruction",
    "property_prediction": "Instance-level property prediction",
}


def _cell(text: str) -> str:
    """Make text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _plain(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _format_ours(metric: str, row: Mapping | None) -> str:
    """Our value for one metric of one dataset, as shown in the table."""
    if row is None or (metric not in row and metric + UNAVAILABLE_SUFFIX not in row):
        return DASH
    value = row.get(metric)
    if value is None:
        reason = row.get(metric + UNAVAILABLE_SUFFIX)
        return f"unavailable: {_plain(reason)}" if reason else "unavailable"
    spec = _SPECS.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _plain(value)
    if not math.isfinite(value):
        return str(float(value))
    if spec is None:
        return str(value) if isinstance(value, int) else f"{value:.4g}"
    if spec.percent:
        text = spec.fmt.format(100.0 * value)
        if not -1e-9 <= value <= 1 + 1e-9:
            text += " (stored value outside [0, 1])"
        return text
    if spec.fmt == "{:d}":
        return str(int(value)) if float(value).is_integer() else f"{value:g}"
    return spec.fmt.format(value)


def _unit(metric: str, paper: list[PaperNumber]) -> str:
    if metric in _SPECS:
        return _SPECS[metric].unit
    return paper[0].unit if paper else ""


def _label(metric: str) -> str:
    return _SPECS[metric].label if metric in _SPECS else metric


def _metric_keys(row: Mapping | None) -> set[str]:
    """Metric names in one dataset's results ("x_unavailable" counts as metric "x")."""
    if not row:
        return set()
    return {k[: -len(UNAVAILABLE_SUFFIX)] if k.endswith(UNAVAILABLE_SUFFIX) else k for k in row}


def _ordered(task: str, metrics: set[str]) -> list[str]:
    order = _ORDER.get(task, ())
    return [m for m in order if m in metrics] + sorted(m for m in metrics if m not in order)


def _section(task: str, results: Mapping | None) -> list[str]:
    results = results or {}
    paper = paper_numbers(task=task)
    # GLASS and GLASS† columns always; GLASS-Sem only where the paper has GLASS-Sem numbers.
    variants = [v for v in PAPER_VARIANTS
                if v in ("GLASS", "GLASS†") or any(n.variant == v for n in paper)]
    lines = [f"## {_TITLES.get(task, task)}", ""]
    tables = sorted({n.table for n in paper}, key=lambda t: int(t.split()[-1]))
    if tables:
        lines.append("Paper numbers from " + ", ".join(tables) + ".")
    else:
        lines.append("The paper reports no numbers for this section.")
    if not results:
        lines.append("")
        lines.append("No results of ours for this section in the metrics.")
    lines.append("")
    header = ["dataset", "metric", "unit", "ours"] + [f"paper {v}" for v in variants] + ["paper table"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    datasets = sorted(set(results) | {n.dataset for n in paper})
    notes: dict[tuple[str, str], set[str]] = {}
    for dataset in datasets:
        row = results.get(dataset)
        if row is not None and not isinstance(row, Mapping):
            row = {"value": row}
        for metric in _ordered(task, _metric_keys(row) | {n.metric for n in paper
                                                         if n.dataset == dataset}):
            found = [n for n in paper if n.dataset == dataset and n.metric == metric]
            cells = [dataset, _label(metric), _unit(metric, found), _format_ours(metric, row)]
            for variant in variants:
                hit = [n for n in found if n.variant == variant]
                cells.append(hit[0].text if hit else DASH)
            cells.append(", ".join(sorted({n.table for n in found})) if found else DASH)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            for n in found:
                if n.note:
                    notes.setdefault((n.table, n.note), set()).add(f"{dataset} {_label(metric)}")
    if notes:
        lines.append("")
        lines.append("Notes on the paper's numbers:")
        for (table, note), where in sorted(notes.items()):
            lines.append(f"- {table} ({', '.join(sorted(where))}): {_cell(note)}")
    lines.append("")
    return lines


def render_report(metrics: Mapping, conventions: Mapping, config_name: str) -> str:
    """Markdown comparing our metrics (metrics/evaluate.json) with the paper's numbers."""
    metrics = metrics or {}
    conventions = conventions or {}
    toy = sorted(task for task, section in metrics.items()
                 if isinstance(section, Mapping) and "toy_val" in section)
    lines = [f"# GLASS evaluation: ours vs. the paper ({_cell(config_name)} configuration)", ""]
    lines.append(f"Configuration: `{config_name}`")
    lines.append("")
    if "cpu" in config_name.lower():
        lines.append("**This report comes from the CPU configuration. Its numbers are NOT comparable "
                     "with the paper's:** it uses tiny random-weight models trained briefly on a "
                     "procedural toy world; it only shows that the pipeline runs end to end.")
        lines.append("")
    lines.append("Numbers from the CPU configuration (tiny random-weight models, toy world) are not "
                 "comparable with the paper's; only the paper configuration, on the paper's "
                 "datasets, can be compared.")
    if toy:
        lines.append("")
        lines.append("The toy world (`toy_val`, in: " + ", ".join(toy) + ") has no paper numbers.")
    lines.append("")
    lines.append("Conventions used for our numbers:")
    lines.append("")
    if conventions:
        for key in sorted(conventions, key=str):
            lines.append(f"- {_cell(key)}: {_cell(_plain(conventions[key]))}")
    else:
        lines.append("- (none recorded)")
    lines.append("")
    lines.append("How to read the tables: our overlap metrics (mIoU, mBO, FG-ARI) and shares "
                 "(SO / PO / GO / BG, class accuracy) are stored in [0, 1] and shown here x100 in %, "
                 "the paper's unit; PSNR is in dB; SSIM, LPIPS, FID, FD and the centre MSE are shown "
                 "as computed. Paper values are exactly as printed. GLASS uses BLIP-2 captions, "
                 "GLASS† ground-truth class labels, GLASS-Sem is the semantic-level variant "
                 "(lambda_i = 0.1, lambda_s = 1); where a paper table has two GLASS rows, the "
                 "first is taken as GLASS and the second as GLASS† (see glass.eval.paper_numbers "
                 "for the caveat). \"—\" means no value (the paper has none for this "
                 "dataset, e.g. the toy world, or our metrics lack it); \"unavailable: ...\" gives "
                 "the reason a metric of ours could not be computed.")
    lines.append("")
    extra = sorted((k for k in metrics if k not in TASKS), key=str)
    for task in (*TASKS, *extra):
        section = metrics.get(task)
        lines.extend(_section(task, section if isinstance(section, Mapping) else None))
    return "\n".join(lines).rstrip("\n") + "\n"
