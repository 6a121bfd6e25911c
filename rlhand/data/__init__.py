"""Tokenizers and prompts: everything a run reads before any model is built."""
