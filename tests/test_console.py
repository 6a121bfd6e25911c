"""The console: the first, every `every`-th and the last step are printed, and the summary line
reads right for a run of one or two steps."""

import io

from rich.console import Console

from rlhand.reporting.console import ConsoleReporter
from rlhand.stages.ppo.statistics import summary_line


def test_the_last_step_is_printed_whatever_its_number():
    out = io.StringIO()
    reporter = ConsoleReporter(13, progress_bar=False, every=10, console=Console(file=out, width=200))
    for step in range(1, 14):
        reporter.step({"step": step, "reward/mean": 0.0, "time/iteration_s": 0.1})
    printed = [line.split()[1] for line in out.getvalue().splitlines()]
    assert printed == ["1", "10", "13"]


def test_the_summary_of_a_short_run_says_first_and_last_step():
    history = [{"reward/mean": r, "time/iteration_s": 1.0} for r in (0.1, 0.5)]
    assert "(first/last step); 2 steps in 2.0s" in summary_line(history)
    assert "(mean of first/last 10 steps)" in summary_line(history * 10)
