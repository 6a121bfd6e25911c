"""Validation on held-out prompts, and early stopping on its reward."""
