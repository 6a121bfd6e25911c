"""The one trainer core: setup, the PPO iteration loop, advantages and the clipped update."""
