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


# ------------------------------------------------------------------ landmarks in the same files
def test_landmark_file_is_attached_and_the_template_fills_the_rest(tmp_path: Path) -> None:
    """data.landmark_file gives each listed face its five points (pixels of the stored image);
    faces without a found face get the FER2013 template's five points, so every face has five."""
    from robustfer.data.landmarks import template_five
    from robustfer.data.pose import read_landmark_file

    f = _write(tmp_path / "p.csv", [
        {"id": "test/00000", "yaw": "0", "pitch": "", "roll": "", "yaw_bin": "2", "method": "mesh",
         "landmarks": "10 12 22 12.5 16 18 12 24 20 24"},
        {"id": "test/00001", "yaw": "", "pitch": "", "roll": "", "yaw_bin": "", "method": "none", "landmarks": ""},
    ])
    assert list(read_landmark_file(f)) == ["test/00000"]
    cfg = DataConfig(num_classes=7, landmark_file=[str(f)])
    ds = _build("synthetic:test", cfg, {}, "majority")
    assert ds.landmark_count == 5
    assert np.allclose(ds.load_landmarks(0), [[10, 12], [22, 12.5], [16, 18], [12, 24], [20, 24]])
    side = ds.load_image(1).shape[0]
    t = template_five()
    assert np.allclose(ds.load_landmarks(1), t * side, atol=1e-4)
    # the template: eyes level and apart, the nose below them, the mouth below the nose
    assert t[0, 0] < 0.5 < t[1, 0] and abs(t[0, 1] - t[1, 1]) < 0.02 and t[0, 1] < t[2, 1] < t[3, 1]
    # without the option nothing changes
    assert _build("synthetic:test", DataConfig(num_classes=7), {}, "majority").landmark_count == 0
    # a looser crop shrinks the template about the centre
    assert np.allclose(template_five(2.1), 0.5 + (t - 0.5) / 2)


def test_faces_the_front_end_recut_get_the_template_in_the_crop_geometry(tmp_path: Path) -> None:
    from robustfer.data.landmarks import template_five
    from robustfer.engine.data import attach_landmark_file
    from robustfer.data.base import FERDataset, Sample

    f = _write(tmp_path / "p.csv", [{"id": "a", "yaw": "", "pitch": "", "roll": "", "yaw_bin": "",
                                      "method": "mesh", "landmarks": "1 1 2 2 3 3 4 4 5 5"}])
    crops = [Sample(id=i, label=0, pixels=np.zeros((96, 96, 3), np.uint8)) for i in ("a", "b")]
    ds = FERDataset("x", "train", crops, 7)
    cfg = DataConfig(num_classes=7, landmark_file=str(f), crop_scale=1.25)
    out = attach_landmark_file(ds, cfg, aligned=True)
    for i in range(2):  # the file's points are in the uncut image: not used for re-cut faces
        assert np.allclose(out.load_landmarks(i), template_five(1.25) * 96, atol=1e-4)


def test_bad_landmark_files(tmp_path: Path) -> None:
    from robustfer.data.pose import read_landmark_file

    with pytest.raises(DatasetError, match="annotate-pose"):
        read_landmark_file(tmp_path / "nope.csv")
    (tmp_path / "old.csv").write_text("id,yaw,pitch,roll,yaw_bin,method\na,1,,,2,mesh\n")
    with pytest.raises(DatasetError, match="older robustfer"):
        read_landmark_file(tmp_path / "old.csv")
    (tmp_path / "three.csv").write_text("id,landmarks\na,1 2 3 4 5 6\n")
    with pytest.raises(DatasetError, match="line 2: 3 landmarks"):
        read_landmark_file(tmp_path / "three.csv")
    (tmp_path / "word.csv").write_text("id,landmarks\na,1 2 x\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_landmark_file(tmp_path / "word.csv")
    # a pose file of the earlier format still reads as a pose file
    assert read_pose_file(tmp_path / "old.csv") == {"a": (1.0, 2)}


def test_annotate_pose_writes_the_detectors_five_points_in_image_pixels() -> None:
    from robustfer.inference.posefile import _points_text

    pts = np.array([[40.0, 48], [104, 48], [72, 80], [48, 104], [96, 104]])
    text = _points_text(pts, upscale=4)
    back = np.array([float(v) for v in text.split()]).reshape(5, 2)
    assert np.allclose(back, (pts + 0.5) / 4 - 0.5, atol=0.006)
    assert _points_text(None, 4) == ""
    assert _points_text(np.vstack([pts[:3], [[np.nan, np.nan]] * 2]), 4) == ""  # dlib: no mouth corners


@pytest.mark.data
def test_annotate_pose_landmarks_sit_on_the_faces(data_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """On real FER2013 faces (the first 80 of the RAN pose > 45 list) the written points are
    where faces have eyes, nose and mouth, in the 48-px image's pixels, near the template's."""
    import robustfer.data
    from robustfer.data.landmarks import template_five
    from robustfer.data.pose import read_landmark_file

    real = robustfer.data.build_dataset
    monkeypatch.setattr(robustfer.data, "build_dataset",
                        lambda *a, **k: real(*a, **k).subset_of(range(80), "first80"))
    out = tmp_path / "pose45.csv"
    assert main(["annotate-pose", "ferplus:test:pose45", "--data-root", str(data_root), "--out", str(out),
                 "--no-progress"]) == 0
    pts = np.stack(list(read_landmark_file(out).values()))  # (N, 5, 2)
    assert len(pts) > 0.6 * 80
    assert (pts > -8).all() and (pts < 56).all()
    assert np.mean(pts[:, 0, 1] < pts[:, 3, 1]) > 0.95 and np.mean(pts[:, 1, 1] < pts[:, 4, 1]) > 0.95
    assert np.mean(pts[:, 3, 0] < pts[:, 4, 0]) > 0.95  # the subject's right mouth corner is image-left
    # turned faces: the points move, but their median stays within 4 px of the template's
    assert np.abs(np.median(pts, 0) - template_five() * 48).max() < 4
