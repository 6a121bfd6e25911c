"""rlhand: config-driven PPO-RLHF for causal language models."""

__version__ = "0.1.0"
