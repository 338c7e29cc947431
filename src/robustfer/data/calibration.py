"""Calibration of predicted probabilities: expected calibration error, reliability bins and
temperature scaling, in plain numpy (no PyTorch: the runtime applies the temperature too).

* **ECE** (Naeini et al., AAAI 2015; as in Guo et al., "On Calibration of Modern Neural
  Networks", ICML 2017, eq. 3): the top-class confidences are put in ``n_bins`` equal-width bins
  over [0, 1]; ``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|``.
* **Temperature scaling** (Guo et al. 2017, section 4.2): one scalar ``T > 0`` divides the
  logits, ``q = softmax(z / T)``; ``T`` minimises the negative log-likelihood on a validation
  split and leaves every argmax, so accuracy is unchanged. Log-probabilities work as logits
  (they differ from the logits by a per-row constant, which the softmax ignores), so ``T`` can
  be fitted from stored probabilities as well.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robustfer.errors import MetricsError


def _check(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or len(p) == 0:
        raise MetricsError(f"probabilities must be a non-empty (N, classes) array, got shape {p.shape}.")
    if y.shape != (len(p),):
        raise MetricsError(f"labels must have shape ({len(p)},), got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise MetricsError(f"labels must be class indices 0..{p.shape[1] - 1}.")
    return p, y.astype(np.int64)


def reliability(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, Any]:
    """Reliability-diagram bins and the ECE of top-class confidence.

    Returns ``{"ece", "n_bins", "bins": [{"lo", "hi", "count", "confidence", "accuracy"}]}``
    (``confidence``/``accuracy`` are ``None`` for an empty bin); JSON-serialisable.
    """
    p, y = _check(probs, labels)
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds (edges[b], edges[b+1]]; a confidence of exactly 0 goes to the first bin
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = idx == b
        c = int(m.sum())
        if c:
            ece += c / len(p) * abs(correct[m].mean() - conf[m].mean())
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": c,
                     "confidence": float(conf[m].mean()) if c else None,
                     "accuracy": float(correct[m].mean()) if c else None})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE of the top-class confidence with ``n_bins`` equal-width bins (a fraction)."""
    return reliability(probs, labels, n_bins)["ece"]


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)``: the probabilities a temperature-scaled model would give."""
    if not temperature > 0:
        raise MetricsError(f"temperature={temperature}: must be > 0.")
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true classes."""
    p, y = _check(probs, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(probs: Any, labels: Any, lo: float = 0.05, hi: float = 20.0, iters: int = 80) -> float:
    """The temperature minimising validation NLL (golden-section search on log T; the NLL of
    temperature scaling is unimodal in T)."""
    p, y = _check(probs, labels)
    logp = np.log(np.clip(p, 1e-12, None))

    def f(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z -= z.max(1, keepdims=True)
        lse = np.log(np.exp(z).sum(1))
        return float(np.mean(lse - z[np.arange(len(y)), y]))

    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))
