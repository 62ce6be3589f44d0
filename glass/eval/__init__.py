"""Evaluation: object-discovery metrics (mIoU, mBO, FG-ARI) and same-class merging."""

from glass.eval.object_discovery import mean_metrics, object_discovery, same_class_merged

__all__ = ["object_discovery", "same_class_merged", "mean_metrics"]
