"""One run's lifecycle, whatever its stage (lifecycle.py), and what a stage supplies to it
(stage.py). A run of a config's stage is built by rlhand.stages.build_run."""
