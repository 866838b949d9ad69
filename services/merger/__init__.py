"""Merger service: folds LoRA adapters into their base model, registers the result."""
