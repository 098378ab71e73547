# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Data: loading and mixing datasets, transforms, collation, and the built-in emoji-scenes benchmark.

Sources: ``loaders`` (``load_segmentation_dataset``, ``load_weak_dataset``, ``load_classification_dataset``)
give a ``source_dataset.SourceDataset``; ``class_names`` finds their names, ``decoding`` decodes cells (through the shared ``image_utils_larvseg``),
``errors`` holds the errors that name the bad row, ``validation`` checks every row before training.
Training: ``vocabulary_mapping`` maps sources into one vocabulary, ``samples`` builds training samples,
``map_dataset`` / ``streaming`` serve them, ``mixing`` mixes sources, ``sharding`` splits them by node,
``collate`` batches them.

Kept free of imports so that ``larvseg_hf.data.<module>`` pays only for what it uses.
"""
