"""Training: the data pipeline over the synthesis shards and the frozen-encoder feature cache.

``glass.train.data`` reads the ``synthesize`` stage's WebDataset shards (``glass.synth.shards``)
into batches of (image, pseudo mask) and splits every epoch across processes × dataloader workers
itself, so each sample is seen exactly once per epoch; ``glass.train.feature_cache`` stores the
frozen encoder's features per (sample, flip) so that they are computed once.
"""
