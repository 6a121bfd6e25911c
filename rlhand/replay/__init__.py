"""Experience replay for PPO: sum tree, the sample store, and how replayed samples join an update."""
