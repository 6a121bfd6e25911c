"""Rollouts: a generation engine samples responses (engines.py), then each is scored (reference, critic, reward) in one no-grad pass each."""
