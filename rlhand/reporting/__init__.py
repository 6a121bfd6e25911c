"""What a run shows and writes: phase timers, metrics.jsonl and the rich console."""
