"""Pure tensor math for PPO-RLHF: no models, configs, devices or global state."""
