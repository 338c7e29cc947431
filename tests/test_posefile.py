"""Pose-label files: annotate-pose writes them, the engine attaches them, RAN agreement."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from robustfer.cli import main
from robustfer.engine.config import DataConfig
from robustfer.engine.data import _build
from robustfer.errors import DatasetError
from robustfer.data.pose import COLUMNS, read_pose_file
from robustfer.inference.posefile import ran_agreement


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def test_pose_file_is_attached_by_the_engine(tmp_path: Path) -> None:
    f = _write(tmp_path / "p.csv", [
        {"id": "test/00000", "yaw": "-60.5", "pitch": "", "roll": "", "yaw_bin": "0", "method": "landmarks"},
        {"id": "test/00001", "yaw": "", "pitch": "", "roll": "", "yaw_bin": "", "method": "none"},
    ])
    cfg = DataConfig(train="synthetic:train", val="synthetic:valid", num_classes=7, pose_file=str(f))
    ds = _build("synthetic:test", cfg, {}, "majority")
    assert (ds.samples[0].pose, ds.samples[0].pose_bin) == (-60.5, 0)
    assert (ds.samples[1].pose, ds.samples[1].pose_bin) == (None, None)
    plain = _build("synthetic:test", DataConfig(num_classes=7), {}, "majority")
    assert ds.samples[2] == plain.samples[2]  # ids not in the file keep their own pose
    # a list of files (one per split, as annotate-pose writes them) is merged
    g = _write(tmp_path / "q.csv", [
        {"id": "test/00002", "yaw": "45.0", "pitch": "", "roll": "", "yaw_bin": "3", "method": "landmarks"}])
    both = _build("synthetic:test", DataConfig(num_classes=7, pose_file=[str(f), str(g)]), {}, "majority")
    assert [s.pose_bin for s in both.samples[:3]] == [0, None, 3]


def test_bad_pose_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_pose_file(tmp_path / "nope.csv")
    (tmp_path / "h.csv").write_text("name,angle\na,1\n")
    with pytest.raises(DatasetError, match="header"):
        read_pose_file(tmp_path / "h.csv")
    (tmp_path / "v.csv").write_text("id,yaw,yaw_bin\na,left,1\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_pose_file(tmp_path / "v.csv")


def test_annotate_pose_cli_writes_one_row_per_image(tmp_path: Path) -> None:
    out = tmp_path / "poses.csv"
    assert main(["annotate-pose", "synthetic:test", "--out", str(out), "--detector", "haar",
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 200 and list(rows[0]) == COLUMNS
    assert len(read_pose_file(out)) == 200


@pytest.mark.data
def test_ran_agreement_is_perfect_for_the_lists_themselves(data_root: Path) -> None:
    from robustfer.data import build_dataset

    p30 = {s.id for s in build_dataset("ferplus:test:pose30", root=data_root).samples}
    p45 = {s.id for s in build_dataset("ferplus:test:pose45", root=data_root).samples}
    test = build_dataset("ferplus:test", root=data_root)
    poses = {s.id: ((50.0 if s.id in p45 else 40.0 if s.id in p30 else 0.0), None) for s in test.samples}
    agr = ran_agreement(poses, data_root)
    for k in ("pose>30", "pose>45"):
        assert agr[k]["accuracy"] == 1.0 and agr[k]["coverage"] == 1.0
    assert agr["pose>30"]["base_rate"] == pytest.approx(1170 / 3137)


def test_training_log_counts_pose_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run says how many training images carry a pose label (PhaNet's pose head learns
    from those only; annotate-pose finds no face in about 30 % of FERPlus)."""
    f = _write(tmp_path / "p.csv", [
        {"id": "train/00000", "yaw": "-60.5", "pitch": "", "roll": "", "yaw_bin": "0", "method": "landmarks"},
        {"id": "train/00001", "yaw": "10.0", "pitch": "", "roll": "", "yaw_bin": "2", "method": "landmarks"},
        {"id": "train/00002", "yaw": "", "pitch": "", "roll": "", "yaw_bin": "", "method": "none"},
    ])
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_quickstart.yaml"
    assert main(["train", "--config", str(recipe), "--output-dir", str(tmp_path), "--name", "r",
                 "train.progress=false", "data.train_options={size: 32}", "data.eval_options={size: 16}",
                 "train.batch_size=16", "train.max_steps_per_epoch=1", "model.options={width: 0.25}",
                 "train.epochs=1", "data.eval=[]", "eval.plots=false", f"data.pose_file={f}"]) == 0
    # synthetic samples carry their own pose bins; the file replaces three of them, one by "none"
    assert "pose labels: 31 of 32 training images" in capsys.readouterr().out


def test_yaw_distribution_bands_sum_to_100_and_use_absolute_yaw() -> None:
    from robustfer.inference.posefile import yaw_distribution

    d = yaw_distribution(np.array([-50.0, -10.0, 0.0, 20.0, 31.0, 90.0]))
    assert d["0-15"] == pytest.approx(100 * 2 / 6) and d["45-60"] == pytest.approx(100 / 6)
    assert d["60-90"] == pytest.approx(100 / 6)
    assert sum(v for k, v in d.items() if k != "median_abs_yaw") == pytest.approx(100.0)
    assert d["median_abs_yaw"] == pytest.approx(25.5)
