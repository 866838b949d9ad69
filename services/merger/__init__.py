"""Merger service: folds LoRA adapters into their base model and registers the result."""
