"""Evaluation: object-discovery metrics (mIoU, mBO, FG-ARI; instance and class level),
same-class merging and SO/PO/GO slot-binding shares."""

from glass.eval.object_discovery import (class_map, mean_metrics, object_discovery,
                                         same_class_merged, semantic_discovery)
from glass.eval.slot_binding import slot_binding, slot_binding_shares

__all__ = ["object_discovery", "same_class_merged", "mean_metrics", "class_map",
           "semantic_discovery", "slot_binding", "slot_binding_shares"]
