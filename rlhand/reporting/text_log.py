"""logs/train_<YYYYmmdd_HHMMSS>.log: timestamped INFO / WARNING / ERROR lines of one process."""

import logging
import time
from pathlib import Path


def open_text_log(log_dir: Path) -> logging.Logger:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"train_{time.strftime('%Y%m%d_%H%M%S')}.log"
    # One logger per file: several runs in one process (tests, sweeps) must not share handlers.
    logger = logging.getLogger(f"rlhand.run.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = _RaisingFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


class _RaisingFileHandler(logging.FileHandler):
    """logging's handlers print a traceback and carry on when a write fails; a full disk must end
    the run with one clear line instead (rlhand.errors.writing)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        raise  # called from inside emit()'s except block: re-raise the write's own error


def close_text_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
