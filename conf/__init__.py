# Makes the config folder a package (rlhand.conf in the wheel) so it ships with `pip install .`.
