"""Training utilities for LarvSeg: arguments, presets, Trainer, model-card rendering."""
