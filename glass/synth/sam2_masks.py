"""Semantic masks from SAM 2's automatic masks, labelled by the attention classes.

The paper's "GLASS w/ SAMv2" ablation (Table 6c; supplement Sec. 4 "Guidance with SAMv2 Masks"):
instead of the attention pseudo mask, the guidance comes from SAM 2's automatic mask generator run
on the generated image. SAM masks carry no class, so each one takes its class from the attention
pseudo mask (0 background, 1..K classes, 255 unsure) by the rules of :func:`label_sam_masks`.

The generator's settings default to sam2's own. The paper (Fig. 7) notes that these defaults
under-segment (people end up as background) and that denser point grids over-segment objects into
parts; that sensitivity is the ablation's point, so the settings are parameters, not tuned here.
"""

from __future__ import annotations

import numpy as np

from glass.errors import InvalidInput
from glass.devices import resolve_device
from glass.model_reference import portable_model_name
from glass.shard_format import BACKGROUND_LABEL, UNSURE_LABEL
from glass.sam2_model import load_sam2  # top level so the stage's dependency list includes it

# sam2's SAM2AutomaticMaskGenerator defaults (sam2 1.1.0), chosen there for the Hiera-L model.
DEFAULT_POINTS_PER_SIDE = 32
DEFAULT_POINTS_PER_BATCH = 64
DEFAULT_PRED_IOU_THRESH = 0.8
DEFAULT_STABILITY_SCORE_THRESH = 0.95
DEFAULT_BOX_NMS_THRESH = 0.7
DEFAULT_CROP_N_LAYERS = 0
DEFAULT_MIN_MASK_REGION_AREA = 0
DEFAULT_MIN_CLASS_OVERLAP = 0.5


def label_sam_masks(sam_masks: list[np.ndarray], attention_mask: np.ndarray,
                    min_class_overlap: float = DEFAULT_MIN_CLASS_OVERLAP) -> np.ndarray:
    """Label map (H, W) uint8 from binary SAM masks and the attention pseudo mask.

    Rules:

    1. Each SAM mask gets one label from the attention pixels it covers. Unsure pixels (255) do
       not vote. Among the others, the label with the most pixels wins; background (0) competes
       like a class, so a mask lying mostly on attention background is background. Ties go to
       the smaller label (background before classes, class 1 before class 2).
    2. A winning class is kept only if its pixels are at least ``min_class_overlap`` of the
       whole SAM mask (unsure pixels count in the mask's area); otherwise the mask is background.
       A mask with no voting pixels (all unsure, or empty) is background.
    3. Masks are painted from the largest area to the smallest (ties keep the given order), so
       a smaller mask lying on a larger one stays visible on top; this holds for masks labelled
       background too, which carve background out of a larger class mask.
    4. Pixels no SAM mask covers are background (0). The result has no unsure (255) pixels:
       inside a mask SAM's boundary decides, outside every mask the pixel is background.

    With no SAM masks, or no classes (K = 0), every pixel is background.
    """
    attention_mask = np.asarray(attention_mask)
    if attention_mask.ndim != 2 or attention_mask.dtype != np.uint8:
        raise InvalidInput(f"attention_mask must be (H, W) uint8, got {attention_mask.dtype} "
                         f"{attention_mask.shape}")
    if not 0.0 <= min_class_overlap <= 1.0:
        raise InvalidInput(f"min_class_overlap must be in [0, 1], got {min_class_overlap}")
    masks = [np.asarray(mask, dtype=bool) for mask in sam_masks]
    for index, mask in enumerate(masks):
        if mask.shape != attention_mask.shape:
            raise InvalidInput(f"SAM mask {index} has shape {mask.shape}, the attention mask "
                             f"{attention_mask.shape}")
    labels = np.full(attention_mask.shape, BACKGROUND_LABEL, dtype=np.uint8)
    areas = np.array([mask.sum() for mask in masks], dtype=np.int64)
    for index in np.argsort(-areas, kind="stable"):   # largest first: small masks end on top
        mask = masks[index]
        labels[mask] = sam_mask_label(attention_mask[mask], min_class_overlap)
    return labels


def sam_mask_label(covered: np.ndarray, min_class_overlap: float) -> int:
    """The label of one SAM mask from the attention labels of the pixels it covers (rules 1-2)."""
    if covered.size == 0:
        return BACKGROUND_LABEL
    votes = np.bincount(covered, minlength=UNSURE_LABEL + 1)
    votes[UNSURE_LABEL] = 0
    if votes.sum() == 0:
        return BACKGROUND_LABEL
    winner = int(np.argmax(votes))   # argmax picks the smallest label among ties
    if winner == BACKGROUND_LABEL or votes[winner] < min_class_overlap * covered.size:
        return BACKGROUND_LABEL
    return winner


class Sam2MaskSource:
    """SAM 2 automatic masks labelled by the attention classes (``label_masks``).

    ``model`` is a hub id (the paper's size: ``facebook/sam2.1-hiera-large``) or a local folder
    with one config and one checkpoint (see ``glass.sam2_model.load_sam2``). The generator
    settings are passed to ``SAM2AutomaticMaskGenerator`` unchanged. Note that in sam2 1.1.0
    ``min_mask_region_area`` fills holes and removes specks in the low-resolution mask logits
    with sam2's CUDA extension; where that extension is missing sam2 warns and skips the step.
    The model runs in float32 (no autocast), so masks do not depend on the GPU's half-precision
    kernels.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        points_per_side: int = DEFAULT_POINTS_PER_SIDE,
        points_per_batch: int = DEFAULT_POINTS_PER_BATCH,
        pred_iou_thresh: float = DEFAULT_PRED_IOU_THRESH,
        stability_score_thresh: float = DEFAULT_STABILITY_SCORE_THRESH,
        box_nms_thresh: float = DEFAULT_BOX_NMS_THRESH,
        crop_n_layers: int = DEFAULT_CROP_N_LAYERS,
        min_mask_region_area: int = DEFAULT_MIN_MASK_REGION_AREA,
        min_class_overlap: float = DEFAULT_MIN_CLASS_OVERLAP,
    ) -> None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        if not 0.0 <= min_class_overlap <= 1.0:
            raise InvalidInput(f"min_class_overlap must be in [0, 1], got {min_class_overlap}")
        self.model_id = str(model)
        self.model_name = portable_model_name(self.model_id)     # what the samples record
        self.device = resolve_device(device)
        self.min_class_overlap = min_class_overlap
        self.generator_settings = {
            "points_per_side": points_per_side,
            "points_per_batch": points_per_batch,
            "pred_iou_thresh": pred_iou_thresh,
            "stability_score_thresh": stability_score_thresh,
            "box_nms_thresh": box_nms_thresh,
            "crop_n_layers": crop_n_layers,
            "min_mask_region_area": min_mask_region_area,
        }
        self.model = load_sam2(self.model_id, self.device)
        self.generator = SAM2AutomaticMaskGenerator(self.model, output_mode="binary_mask",
                                                    **self.generator_settings)

    @property
    def settings(self) -> dict:
        """Everything that decides the masks, for a sample's metadata."""
        return {"model": self.model_name, "min_class_overlap": self.min_class_overlap,
                **self.generator_settings}

    def sam_masks(self, image: np.ndarray) -> list[np.ndarray]:
        """SAM 2's automatic masks of an (H, W, 3) uint8 RGB image: (H, W) bool arrays."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
        records = self.generator.generate(np.ascontiguousarray(image))
        return [np.asarray(record["segmentation"], dtype=bool) for record in records]

    def label_masks(self, image: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(H, W) uint8 label map: SAM 2's masks of ``image`` labelled by ``attention_mask``
        (0 background, 1..K classes, 255 unsure) as :func:`label_sam_masks` documents."""
        attention_mask = np.asarray(attention_mask)
        if attention_mask.shape != np.shape(image)[:2]:
            raise InvalidInput(f"attention mask {attention_mask.shape} does not match the image "
                             f"{np.shape(image)[:2]}")
        return label_sam_masks(self.sam_masks(image), attention_mask, self.min_class_overlap)

