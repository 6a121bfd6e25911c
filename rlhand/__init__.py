"""rlhand: config-driven PPO-RLHF for causal language models."""

__version__ = "0.1.0"

import logging

# bitsandbytes (imported by PEFT wherever it is installed) warns at import, on CPUs with AVX512-BF16,
# that an optional kernel package is missing; its pure-torch path then runs, correctly. Silenced so
# that a run's first line stays its memory estimate (rlhand/models/quantize.py uses bitsandbytes).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
