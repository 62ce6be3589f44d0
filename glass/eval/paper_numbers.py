"""The GLASS paper's reported numbers for GLASS, GLASS† and GLASS-Sem, as typed data.

Source: Singh, Schaub-Meyer & Roth, "GLASS: Guided Latent Slot Diffusion for Object-Centric
Learning" (main text + supplement; docs/paper-facts.md). Each entry names the table it
comes from; ``printed`` keeps the number exactly as the paper prints it (``value`` is its float),
``unit`` says what it is measured in: "%" for percentages (they stay percentages, e.g. 38.9 means
38.9 %), "dB" for PSNR, "unitless" otherwise.

Which row is which variant
--------------------------
The text extraction lost the dagger of "GLASS†": where a table has two "GLASS (ours)" rows, the
FIRST row is GLASS (BLIP-2 captions) and the SECOND is GLASS† (ground-truth class labels). This
mapping follows the project's reference digest (docs/paper-facts.md, "Evaluation": Table 2 COCO GLASS†
= 38.9 / 40.6 / 48.5), which was read off the typeset paper. Caveat: the extracted text alone points
the other way in places. Table 6a/6b (full loss / DINOv2 rows: COCO 38.9, VOC 58.1), Table 12 (7
slots: 38.9 / 40.6) and Table 13 (caption type "BLIP-2": 38.9 / 40.6) all carry the second row's
numbers under the name "GLASS". Those captions may themselves have lost a dagger (Table 13 would
then vary the caption that GLASS† still uses beside its ground-truth labels), so the digest's mapping
is kept. Re-check against the typeset PDF before relying on the GLASS vs GLASS† split.

Left out, and why
-----------------
- Table 2: the improvements in parentheses ("(+4.9)" etc.) are differences to the previous best
  method, not GLASS results.
- Table 8 has one GLASS row only, printed "GLASS (ours)". It is recorded as GLASS; with the dagger
  lost in the extraction it cannot be ruled out that it was GLASS†. There is no second row, so no
  GLASS† property-prediction numbers.
- Table 9 reports mIoU_c only for GLASS-Sem (lambda_i = 0.1, lambda_s = 1): there is no mIoU_c for
  GLASS or GLASS†. The supplement's "extended Dataset Diffusion 42.8 %" is a baseline, not GLASS.
- Table 7 names no dataset in its header; the text says the FID uses 512 generated and 512 real COCO
  images. PSNR / SSIM / LPIPS are recorded under coco_val too (the only dataset the section uses),
  with a note saying the dataset is implied rather than stated.
- Table 5 repeats Table 2's VOC rows (57.8 / 58.5 / 61.5 and 58.1 / 58.9 / 62.2): not duplicated here.
- Tables 6, 12 and 13 are ablations (loss terms, encoders, guidance source, slot count, captioner);
  their rows are not the GLASS / GLASS† results this module covers.
"""

from __future__ import annotations

from dataclasses import dataclass

TASKS = ("object_discovery", "generation", "property_prediction")
VARIANTS = ("GLASS", "GLASS†", "GLASS-Sem")
DATASETS = ("coco_val", "voc_val", "clevrtex", "objects365")
METRICS = ("miou_i", "mbo_i", "mbo_c", "miou_c", "fg_ari", "so", "po", "go",
           "psnr", "ssim", "lpips", "fid", "class_top1", "centre_mse")
UNITS = ("%", "dB", "unitless")


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper reports: where it comes from, what it measures, its value."""

    table: str          # "Table 2" ... "Table 11"
    task: str           # one of TASKS (matches the sections of metrics/evaluate.json)
    dataset: str        # one of DATASETS
    metric: str         # one of METRICS
    variant: str        # one of VARIANTS
    value: float        # float(printed)
    unit: str           # one of UNITS; "%" values are percentages (0-100)
    printed: str = ""   # exactly as printed in the paper, e.g. "71.30"
    note: str = ""      # context needed to compare with it (image count, implied dataset, ...)

    def __post_init__(self) -> None:
        for name, allowed in (("task", TASKS), ("variant", VARIANTS), ("dataset", DATASETS),
                              ("metric", METRICS), ("unit", UNITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"PaperNumber.{name}={getattr(self, name)!r} not in {allowed}")
        if self.printed and float(self.printed) != self.value:
            raise ValueError(f"printed {self.printed!r} does not match value {self.value!r}")

    @property
    def text(self) -> str:
        """The number as the paper prints it."""
        return self.printed or f"{self.value:g}"


def _row(table: str, task: str, dataset: str, variant: str, unit: str,
         values: dict[str, str], note: str = "") -> tuple[PaperNumber, ...]:
    return tuple(PaperNumber(table=table, task=task, dataset=dataset, metric=metric,
                             variant=variant, value=float(printed), unit=unit,
                             printed=printed, note=note)
                 for metric, printed in values.items())


_OD = "object_discovery"
_GEN = "generation"
_PP = "property_prediction"
_G, _GT, _SEM = "GLASS", "GLASS†", "GLASS-Sem"
_T8 = "the table's only GLASS row (printed 'GLASS (ours)'; a lost dagger cannot be ruled out)"

PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    # Table 2: instance-aware object discovery; header "COCO (in %) | VOC (in %)", each with
    # mIoU_i, mBO_i, mBO_c. Row 1 = GLASS, row 2 = GLASS†.
    *_row("Table 2", _OD, "coco_val", _G, "%", {"miou_i": "39.0", "mbo_i": "40.8", "mbo_c": "48.7"}),
    *_row("Table 2", _OD, "voc_val", _G, "%", {"miou_i": "57.8", "mbo_i": "58.5", "mbo_c": "61.5"}),
    *_row("Table 2", _OD, "coco_val", _GT, "%", {"miou_i": "38.9", "mbo_i": "40.6", "mbo_c": "48.5"}),
    *_row("Table 2", _OD, "voc_val", _GT, "%", {"miou_i": "58.1", "mbo_i": "58.9", "mbo_c": "62.2"}),
    # Table 3: SO / PO / GO slot-binding shares (Fan et al., ICCV 2023); header "COCO (in %) |
    # VOC (in %)", each SO (up), PO (down), GO (down); background share not shown in the paper.
    *_row("Table 3", _OD, "coco_val", _G, "%", {"so": "27.3", "po": "49.6", "go": "0.01"}),
    *_row("Table 3", _OD, "voc_val", _G, "%", {"so": "30.4", "po": "26.2", "go": "0.67"}),
    *_row("Table 3", _OD, "coco_val", _GT, "%", {"so": "25.2", "po": "45.9", "go": "0.00"}),
    *_row("Table 3", _OD, "voc_val", _GT, "%", {"so": "26.7", "po": "42.3", "go": "0.01"}),
    # Table 4: zero-shot object discovery of the COCO-trained model; header "CLEVRTex (in %) |
    # Obj365 (in %)", each mIoU_i, mBO_i. Obj365 ground truth: SAM 2 prompted with the GT boxes.
    *_row("Table 4", _OD, "clevrtex", _G, "%", {"miou_i": "47.2", "mbo_i": "52.3"},
          note="zero-shot: model trained on COCO-generated images"),
    *_row("Table 4", _OD, "objects365", _G, "%", {"miou_i": "19.6", "mbo_i": "22.4"},
          note="zero-shot: model trained on COCO-generated images; GT masks from SAM 2 + GT boxes"),
    *_row("Table 4", _OD, "clevrtex", _GT, "%", {"miou_i": "46.1", "mbo_i": "50.1"},
          note="zero-shot: model trained on COCO-generated images"),
    *_row("Table 4", _OD, "objects365", _GT, "%", {"miou_i": "18.6", "mbo_i": "21.4"},
          note="zero-shot: model trained on COCO-generated images; GT masks from SAM 2 + GT boxes"),
    # Table 7: conditional generation / reconstruction; header PSNR (in dB, up), SSIM (up),
    # LPIPS (down), FID (down). Sec. 5.2: FID from 512 generated and 512 real COCO images.
    *_row("Table 7", _GEN, "coco_val", _G, "dB", {"psnr": "10.88"},
          note="dataset implied (Sec. 5.2 uses COCO), not stated in the table"),
    *_row("Table 7", _GEN, "coco_val", _G, "unitless", {"ssim": "0.20", "lpips": "0.59"},
          note="dataset implied (Sec. 5.2 uses COCO), not stated in the table"),
    *_row("Table 7", _GEN, "coco_val", _G, "unitless", {"fid": "79.61"},
          note="512 generated vs 512 real COCO images"),
    *_row("Table 7", _GEN, "coco_val", _GT, "dB", {"psnr": "10.93"},
          note="dataset implied (Sec. 5.2 uses COCO), not stated in the table"),
    *_row("Table 7", _GEN, "coco_val", _GT, "unitless", {"ssim": "0.21", "lpips": "0.59"},
          note="dataset implied (Sec. 5.2 uses COCO), not stated in the table"),
    *_row("Table 7", _GEN, "coco_val", _GT, "unitless", {"fid": "71.30"},
          note="512 generated vs 512 real COCO images"),
    # Table 8: instance-level property prediction; header "VOC | COCO", each Acc (in %, up) and
    # MSE (down) of the object's bounding-box centre. One GLASS row only (see module docstring).
    *_row("Table 8", _PP, "voc_val", _G, "%", {"class_top1": "58.1"}, note=_T8),
    *_row("Table 8", _PP, "voc_val", _G, "unitless", {"centre_mse": "0.037"},
          note=_T8 + "; MSE of the predicted bounding-box centre"),
    *_row("Table 8", _PP, "coco_val", _G, "%", {"class_top1": "20.8"}, note=_T8),
    *_row("Table 8", _PP, "coco_val", _G, "unitless", {"centre_mse": "0.059"},
          note=_T8 + "; MSE of the predicted bounding-box centre"),
    # Table 9: semantic-level object discovery, mIoU_c (in %, up); header "COCO | VOC".
    # GLASS-Sem = GLASS with lambda_i = 0.1, lambda_s = 1 (46.7 on COCO is repeated in the supplement).
    *_row("Table 9", _OD, "coco_val", _SEM, "%", {"miou_c": "46.7"},
          note="GLASS-Sem: lambda_i = 0.1, lambda_s = 1"),
    *_row("Table 9", _OD, "voc_val", _SEM, "%", {"miou_c": "68.9"},
          note="GLASS-Sem: lambda_i = 0.1, lambda_s = 1"),
    # Table 11 (supplement): FG-ARI (%, up); header "VOC | COCO" (VOC column FIRST).
    # Row 1 = GLASS, row 2 = GLASS†.
    *_row("Table 11", _OD, "voc_val", _G, "%", {"fg_ari": "21.3"}),
    *_row("Table 11", _OD, "coco_val", _G, "%", {"fg_ari": "32.5"}),
    *_row("Table 11", _OD, "voc_val", _GT, "%", {"fg_ari": "22.5"}),
    *_row("Table 11", _OD, "coco_val", _GT, "%", {"fg_ari": "34.1"}),
)


def paper_numbers(*, table: str | None = None, task: str | None = None,
                  dataset: str | None = None, metric: str | None = None,
                  variant: str | None = None) -> tuple[PaperNumber, ...]:
    """The paper numbers matching every given field (None = any), in PAPER_NUMBERS order."""
    wanted = {"table": table, "task": task, "dataset": dataset, "metric": metric,
              "variant": variant}
    return tuple(n for n in PAPER_NUMBERS
                 if all(v is None or getattr(n, k) == v for k, v in wanted.items()))


def paper_number(dataset: str, metric: str, variant: str,
                 task: str | None = None) -> PaperNumber | None:
    """The one paper number for (dataset, metric, variant), or None when the paper has none."""
    found = paper_numbers(task=task, dataset=dataset, metric=metric, variant=variant)
    if len(found) > 1:
        raise LookupError(f"several paper numbers for {(dataset, metric, variant)}: {found}")
    return found[0] if found else None
