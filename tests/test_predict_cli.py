"""`robustfer predict`: images, folders, videos, output files, drawings, bad files, --resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import pytest

from robustfer.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "astronaut.jpg", d / "astronaut.jpg")
    shutil.copy(SAMPLES / "grace_hopper.jpg", d / "sub" / "hopper.jpg")
    (d / "notes.txt").write_text("not media")
    return d


def test_predict_folder_writes_jsonl_and_drawings(folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.jsonl"
    ann = tmp_path / "ann"
    rc = main(["predict", str(folder), "--output", str(out), "--annotate", str(ann), "--no-progress"])
    assert rc == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["source"]).name for r in recs) == ["astronaut.jpg", "hopper.jpg"]
    assert all(len(r["faces"]) == 1 and r["error"] is None for r in recs)
    assert (ann / "astronaut.jpg").is_file() and (ann / "sub" / "hopper.jpg").is_file()
    assert cv2.imread(str(ann / "astronaut.jpg")).shape == (512, 512, 3)
    cap = capsys.readouterr()
    assert "happiness" in cap.out and "astronaut.jpg" in cap.out
    assert "1 non-image file(s) in folders ignored" in cap.err


def test_bad_file_is_reported_and_the_batch_goes_on(folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "r.csv"
    rc = main(["predict", str(folder), str(tmp_path / "missing.jpg"), "-o", str(out), "--no-progress", "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing.jpg" in err and "2 failed" in err
    rows = list(csv.DictReader(out.open()))
    by_name = {Path(r["source"]).name: r for r in rows}
    assert by_name["broken.png"]["error"] and by_name["astronaut.jpg"]["expression"]
    assert set(rows[0]) >= {"x1", "yaw_bin", "p_happiness", "p_contempt"}


def test_resume_skips_finished_files_and_redoes_a_cut_one(folder: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(folder), "-o", str(out), "--no-progress", "-q"]) == 0
    done = Path(str(out) + ".done")
    lines = done.read_text().splitlines()
    # simulate a kill after the first file: the second file's row is half-written, not done
    done.write_text(lines[0] + "\n")
    first = out.read_text().splitlines()[0]
    out.write_text(first + "\n" + '{"source": "' + lines[1] + '", "fa')
    capsys.readouterr()
    assert main(["predict", str(folder), "-o", str(out), "--resume", "--no-progress", "-q"]) == 0
    assert "1 already done" in capsys.readouterr().err
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["source"] for r in recs) == sorted(lines)
    assert sorted(done.read_text().splitlines()) == sorted(lines)


def test_video_one_row_per_face_per_frame(tmp_path: Path) -> None:
    img = cv2.resize(cv2.imread(str(SAMPLES / "grace_hopper.jpg")), (256, 300))
    video = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 300))
    for _ in range(5):
        vw.write(img)
    vw.release()
    out = tmp_path / "v.csv"
    rc = main(["predict", str(video), "--stride", "2", "-o", str(out), "--annotate", str(tmp_path / "a"),
               "--no-progress", "-q"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["frame"] for r in rows] == ["0", "2", "4"] and all(r["face"] == "0" for r in rows)
    cap = cv2.VideoCapture(str(tmp_path / "a" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_no_detect_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(SAMPLES / "camera.png"), "--no-detect", "-o", str(out), "--no-progress", "-q"]) == 0
    rec = json.loads(out.read_text())
    assert rec["faces"][0]["crop"] == "whole-image"
    assert main(["predict", str(SAMPLES), "-o", str(tmp_path / "r.txt"), "--no-progress"]) == 2
    assert ".jsonl or .csv" in capsys.readouterr().err
    assert main(["predict", str(SAMPLES), "--model", "nope", "--no-progress"]) == 2
    assert main(["predict", str(SAMPLES), "--stride", "0", "--no-progress"]) == 2
    assert "--stride (0)" in capsys.readouterr().err
