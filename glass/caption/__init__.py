"""Captioning backends: BLIP-2 (paper), ground-truth labels (GLASS†), the Table 13 template,
and the dataset's own captions."""
