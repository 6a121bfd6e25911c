"""How rlhand's commands set up their process for a user's code and the libraries they load.

Where a user's code is imported from: `reward.function._target_=my_rewards.f` names a module in the
folder the command runs in, as `python -m` would find it; a console script's path starts at its own
bin folder instead, so every rlhand command puts the working directory first."""

import os
import sys


def import_from_working_directory() -> None:
    """Put the working directory first on sys.path, as `python -m` does (once; a spawned reward worker
    inherits the parent's path)."""
    cwd = os.getcwd()
    if cwd not in sys.path[:1] and "" not in sys.path[:1]:
        sys.path.insert(0, cwd)


def quiet_library_progress() -> None:
    """transformers' and the hub's progress bars ("Loading weights: 100%|███") off: in a plain log
    they are control characters, and rlhand's own lines say what loads."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
