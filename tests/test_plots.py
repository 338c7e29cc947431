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


#: The columns robustfer.engine.train writes to metrics.csv for every model; methods with
#: several loss terms add train_<term> columns (PhaNet: train_c1..train_c3, ...), which an
#: ordinary run does not have.
_ENGINE_COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                   "val_mean_class_accuracy", "val_macro_f1", "epoch_seconds",
                   "images_per_second", "best")


def _ordinary_run(tmp_path: Path) -> Path:
    """A run folder holding the metrics.csv of an ordinary (non-PhaNet) three-epoch run."""
    import csv

    run = tmp_path / "run"
    run.mkdir()
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(_ENGINE_COLUMNS))
        w.writeheader()
        for epoch in (1, 2, 3):
            w.writerow({"epoch": epoch, "lr": 3e-3 / epoch, "train_loss": 2.0 / epoch,
                        "train_accuracy": 0.3 + 0.1 * epoch, "val_loss": 1.8 / epoch,
                        "val_accuracy": 0.35 + 0.1 * epoch, "val_mean_class_accuracy": 0.2 + 0.1 * epoch,
                        "val_macro_f1": 0.2 + 0.1 * epoch, "epoch_seconds": 12.5,
                        "images_per_second": 80.0, "best": epoch == 3})
    return run


def test_plot_command_defaults_work_on_an_ordinary_run(tmp_path: Path, capsys) -> None:
    from robustfer.cli import main

    run = _ordinary_run(tmp_path)
    assert main(["plot", str(run)]) == 0, capsys.readouterr().err
    written = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert written.parent == run
    _assert_png(written)
    assert "train_loss" in written.name and "val_accuracy" in written.name
    # a metrics.csv path works as well as its folder
    out = tmp_path / "curves.png"
    assert main(["plot", str(run / "metrics.csv"), "--out", str(out)]) == 0
    _assert_png(out)


def test_plot_command_names_missing_columns_and_lists_available(tmp_path: Path, capsys) -> None:
    from robustfer.cli import main

    run = _ordinary_run(tmp_path)
    out = tmp_path / "h.png"
    # one present and one absent column: still an error, naming only the absent one
    assert main(["plot", str(run), "--columns", "train_loss,train_c1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    named, _, available = err.partition("available columns")
    assert "train_c1" in named and "train_loss" not in named
    for have in ("lr", "train_loss", "val_accuracy", "val_macro_f1", "epoch_seconds"):
        assert have in available
    assert not out.exists()


def test_plot_history_columns_missing_column(tmp_path: Path) -> None:
    from robustfer.engine.plots import plot_history_columns

    history = [{"epoch": 1, "train_loss": 1.2, "val_accuracy": 0.5}]
    with pytest.raises(MetricsError, match=r"train_c2.*available columns: train_loss, val_accuracy"):
        plot_history_columns(history, ["train_loss", "train_c2"], tmp_path / "h.png")
    _assert_png(plot_history_columns(history, ["train_loss", "val_accuracy"], tmp_path / "h.png"))
