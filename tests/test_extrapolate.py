import numpy as np
import pytest

from iqpfr.extrapolate import error_kept_for_spearman, log_linear_fit, steps_to_reach


def test_fit_recovers_a_log_linear_curve():
    steps = np.array([100, 200, 400, 800])
    a, b = log_linear_fit(steps, 3.0 + 2.0 * np.log(steps))
    assert a == pytest.approx(3.0) and b == pytest.approx(2.0)


def test_steps_to_reach_inverts_the_fit():
    steps = np.array([100.0, 200.0, 400.0, 800.0])
    values = 10.0 + 1.5 * np.log(steps)
    target = 10.0 + 1.5 * np.log(3000.0)
    assert steps_to_reach(steps, values, target) == pytest.approx(3000.0, rel=1e-6)


def test_already_there_and_never_there():
    steps = np.array([100.0, 200.0, 300.0])
    assert steps_to_reach(steps, np.array([20.0, 24.0, 25.5]), 25.0) == 300.0
    assert steps_to_reach(steps, np.array([22.0, 21.5, 21.0]), 25.0) is None


def test_only_the_last_points_count():
    steps = np.array([100.0, 200.0, 400.0, 800.0, 1600.0])
    values = np.array([0.0, 20.0, 21.0, 22.0, 23.0])  # a jump early on, then 1 dB per doubling
    assert steps_to_reach(steps, values, 24.0, last=3) == pytest.approx(3200.0, rel=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        log_linear_fit(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        log_linear_fit(np.array([1.0]), np.array([1.0]))


def test_error_kept_for_spearman_is_the_largest_share_that_reaches_the_target():
    """Errors that keep the order need no shrinking; a share a reaches the target and a share just
    above it does not; bad input is refused."""
    from scipy.stats import spearmanr

    truth = np.linspace(0.1, 0.9, 30)
    assert error_kept_for_spearman(truth, truth + 0.05, 0.8) == 1.0  # a constant shift keeps every rank
    noise = np.random.default_rng(0).normal(0, 0.3, 30)
    a = error_kept_for_spearman(truth, truth + noise, 0.8)
    assert 0.0 < a < 1.0
    assert spearmanr(truth, truth + a * noise)[0] >= 0.8
    assert spearmanr(truth, truth + (a + 0.01) * noise)[0] < 0.8
    with pytest.raises(ValueError):
        error_kept_for_spearman(truth, truth[:5], 0.8)
