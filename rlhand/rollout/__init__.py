"""Rollouts: sample responses, then score them (reference, critic, reward) in one no-grad pass each."""
