"""Each plot writes a PNG, also when entries are missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robustfer.engine.metrics import MetricsError
from robustfer.engine.plots import plot_confusion, plot_occlusion_curve, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC


def test_import_does_not_load_matplotlib() -> None:
    code = (
        "import sys, robustfer.engine.plots; "
        "sys.exit(any(m.startswith('matplotlib') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion(tmp_path: Path, normalize: bool) -> None:
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    out = plot_confusion(cm, ["neutral", "happiness", "surprise"],
                         tmp_path / "nested" / "cm.png", normalize=normalize, title="t")
    assert out == tmp_path / "nested" / "cm.png"
    _assert_png(out)


def test_plot_confusion_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(MetricsError):
        plot_confusion([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "cm.png")


def test_plot_occlusion_curve_full(tmp_path: Path) -> None:
    results = {f"block{p}": 0.8 - p / 100 for p in (10, 20, 30, 40, 50)}
    results.update(eye_band=0.55, lower_face=0.6)
    _assert_png(plot_occlusion_curve(results, tmp_path / "a" / "occ.png", clean_accuracy=0.85))


@pytest.mark.parametrize(
    "results, clean",
    [
        ({"block10": 0.7, "block40": None, "eye_band": float("nan")}, None),
        ({"clean": 0.9, "lower_face": 0.6}, None),
        ({}, None),
    ],
)
def test_plot_occlusion_curve_missing_entries(
    tmp_path: Path, results: dict, clean: float | None
) -> None:
    _assert_png(plot_occlusion_curve(results, tmp_path / "occ.png", clean_accuracy=clean))


def test_plot_occlusion_curve_rejects_percentages(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match="fraction"):
        plot_occlusion_curve({"block10": 85.0}, tmp_path / "occ.png")


def test_plot_training_curves(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "train_loss": 1.9, "val_loss": 1.7, "val_accuracy": 0.35},
        {"epoch": 2, "train_loss": 1.4, "val_accuracy": 0.5},
        {"epoch": 3, "train_loss": 1.1, "val_loss": None, "val_accuracy": 0.6},
    ]
    _assert_png(plot_training_curves(history, tmp_path / "x" / "curves.png"))


@pytest.mark.parametrize(
    "history",
    [[], [{"train_loss": 1.0}, {"train_loss": 0.8, "val_accuracy": 0.4}]],
)
def test_plot_training_curves_missing(tmp_path: Path, history: list[dict]) -> None:
    _assert_png(plot_training_curves(history, str(tmp_path / "curves.png")))
