"""Full-state checkpoints: atomic folders with a manifest, and what goes in them."""
