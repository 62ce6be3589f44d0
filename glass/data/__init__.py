"""Datasets: COCO class tables, image loading and the procedural toy world."""
