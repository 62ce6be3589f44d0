"""Pretraining the toy world's own foundation models (the CPU configuration's stand-ins for
DINOv2 and Stable Diffusion), so that the miniature runs the method's real data path with models
that have learned something: ``dinov2_ssl`` trains the tiny DINOv2 without labels,
``instance_structure`` measures what its patch features know about objects."""
