# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Data: loading and mixing datasets, transforms, collation, and the built-in emoji-scenes benchmark.

Kept free of imports so that ``larvseg_hf.data.<module>`` pays only for what it uses.
"""
