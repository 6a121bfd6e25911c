"""The RL stage: PPO (and its critic-free estimators) against a reward function or model."""
