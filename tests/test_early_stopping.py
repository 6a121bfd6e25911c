"""Early stopping on validation reward: fires on a flat curve, not on a rising one."""

import math

from rlhand.evaluation.early_stopping import EarlyStopping


def run(values, patience=3, threshold=0.01):
    stopper = EarlyStopping(patience, threshold)
    for step, value in enumerate(values, start=1):
        stopper.update(value, step)
        if stopper.should_stop:
            return step, stopper
    return None, stopper


def test_flat_curve_stops_after_patience():
    stopped_at, stopper = run([0.5] * 10)
    assert stopped_at == 4 and stopper.best == 0.5 and stopper.best_step == 1


def test_rising_curve_never_stops():
    stopped_at, stopper = run([0.1 * i for i in range(20)])
    assert stopped_at is None and stopper.bad_evals == 0 and math.isclose(stopper.best, 1.9)


def test_gains_below_threshold_count_as_flat():
    stopped_at, _ = run([0.5, 0.505, 0.509, 0.5095], threshold=0.01)
    assert stopped_at == 4


def test_improvement_resets_the_count():
    stopped_at, stopper = run([0.5, 0.5, 0.5, 0.7, 0.7, 0.7], patience=3)
    assert stopped_at is None and stopper.bad_evals == 2 and stopper.best_step == 4


def test_no_patience_never_stops_but_tracks_best():
    stopped_at, stopper = run([0.3, 0.2, 0.1] * 5, patience=None)
    assert stopped_at is None and stopper.best == 0.3


def test_state_round_trip():
    _, a = run([0.5, 0.4, 0.4])
    b = EarlyStopping(3, 0.01)
    b.load_state_dict(a.state_dict())
    assert b.update(0.4, 4) is False and b.should_stop
