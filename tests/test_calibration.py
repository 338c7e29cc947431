"""Calibration: ECE, reliability bins, temperature scaling (robustfer.data.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from robustfer.data.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability,
)
from robustfer.errors import MetricsError


def test_ece_by_hand() -> None:
    # two samples at confidence 0.9 (one right), two at 0.6 (both right)
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    r = reliability(p, y, n_bins=10)
    # bins (0.8, 0.9]: acc 0.5, conf 0.9; (0.5, 0.6]: acc 1.0, conf 0.6
    assert r["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    counts = [b["count"] for b in r["bins"]]
    assert sum(counts) == 4 and counts[8] == 2 and counts[5] == 2
    assert r["bins"][0]["confidence"] is None


def test_a_calibrated_model_has_small_ece_and_an_overconfident_one_large() -> None:
    rng = np.random.default_rng(0)
    n, k = 20000, 4
    logits = rng.normal(0, 2.0, (n, k))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])  # labels drawn from p: calibrated
    assert expected_calibration_error(p, y) < 0.02
    sharp = apply_temperature(p, 0.4)  # overconfident
    assert expected_calibration_error(sharp, y) > 0.08
    t = fit_temperature(sharp, y)
    assert t == pytest.approx(1 / 0.4, rel=0.05)  # undoes the sharpening
    fixed = apply_temperature(sharp, t)
    assert expected_calibration_error(fixed, y) < 0.02
    assert nll(fixed, y) < nll(sharp, y)
    assert (fixed.argmax(1) == sharp.argmax(1)).all()  # accuracy is unchanged


def test_temperature_one_is_the_identity_and_bad_input_is_an_error() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-12)
    with pytest.raises(MetricsError, match="> 0"):
        apply_temperature(p, 0.0)
    with pytest.raises(MetricsError, match="class indices"):
        reliability(p, np.array([0, 3]))
    with pytest.raises(MetricsError, match="shape"):
        reliability(p, np.array([0]))
