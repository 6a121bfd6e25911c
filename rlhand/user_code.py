"""Where a user's code is imported from. `reward.function._target_=my_rewards.f` names a module in
the folder the command runs in, as `python -m` would find it; a console script's path starts at its
own bin folder instead, so every rlhand command puts the working directory first."""

import os
import sys


def import_from_working_directory() -> None:
    """Put the working directory first on sys.path, as `python -m` does (once; a spawned reward worker
    inherits the parent's path)."""
    cwd = os.getcwd()
    if cwd not in sys.path[:1] and "" not in sys.path[:1]:
        sys.path.insert(0, cwd)
