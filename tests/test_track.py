"""Faces tracked through video: ids, smoothing, summaries, awkward clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from robustfer import Recognizer
from robustfer.errors import ConfigError, ImageError
from robustfer.inference import load_image
from robustfer.inference.io import iter_video, open_stream
from robustfer.inference.track import FaceTracker

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.from_pretrained("default")


def _face(name: str, rec: Recognizer, side: int) -> np.ndarray:
    im = load_image(SAMPLES / name)
    x1, y1, x2, y2 = rec.predict(im)[0].box
    cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, 1.4 * max(x2 - x1, y2 - y1)
    crop = im[int(cy - s / 2):int(cy + s / 2), int(cx - s / 2):int(cx + s / 2)]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def crossing_clip(rec: Recognizer, n: int = 30) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """Two people walking past each other: A left to right, B right to left; their boxes
    overlap in the middle frames. Returns frames and each frame's true centres (A, B)."""
    a, b = _face("grace_hopper.jpg", rec, 150), _face("astronaut.jpg", rec, 150)
    frames, truth = [], []
    for t in range(n):
        im = np.full((480, 640, 3), 70, np.uint8)
        xa = int(20 + (470 - 20) * t / (n - 1))
        xb = int(470 - (470 - 20) * t / (n - 1))
        im[60:210, xb:xb + 150] = b
        im[190:340, xa:xa + 150] = a  # A in front where they overlap
        frames.append(im)
        truth.append((xa + 75.0, xb + 75.0))
    return frames, truth


def _id_switches(results, truth) -> tuple[int, int]:
    """(identity switches, frames where a person was not found), matching faces to people by
    the nearest true centre."""
    last: dict[int, int] = {}
    switches = missed = 0
    for r, (xa, xb) in zip(results, truth):
        seen = set()
        for f in r.faces:
            cx = (f.box[0] + f.box[2]) / 2
            cy = (f.box[1] + f.box[3]) / 2
            person = 0 if cy > 200 else 1  # A is lower in the frame
            seen.add(person)
            if person in last and last[person] != f.track_id:
                switches += 1
            last[person] = f.track_id
            assert abs(cx - (xa if person == 0 else xb)) < 60
        missed += 2 - len(seen)
    return switches, missed


def test_two_crossing_faces_keep_their_ids(rec: Recognizer) -> None:
    frames, truth = crossing_clip(rec)
    results = list(rec.track(frames))
    assert all(r.frame == i for i, r in enumerate(results))
    switches, missed = _id_switches(results, truth)
    assert switches <= 1, switches
    assert missed <= 6, missed
    ids = {f.track_id for r in results for f in r.faces}
    assert len(ids) <= 3


def test_ids_follow_people_whatever_the_detection_order(rec: Recognizer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A detector's per-frame order (best score first) is no identity: when it reverses from
    # frame to frame, face index 0 changes person, and the tracker must not.
    frames, truth = crossing_clip(rec)
    detect = rec.detect
    calls = {"n": 0}

    def flipping(image):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        faces = list(detect(image))
        return faces[::-1] if calls["n"] % 2 else faces

    monkeypatch.setattr(rec, "detect", flipping)
    flips, prev = 0, None
    for im in frames[:10]:
        faces = rec.predict(im)
        if len(faces) == 2:
            first = 0 if (faces[0].box[1] + faces[0].box[3]) / 2 > 200 else 1
            flips += prev is not None and first != prev
            prev = first
    assert flips >= 3  # the raw order does change person
    switches, missed = _id_switches(list(rec.track(frames)), truth)
    assert switches <= 1 and missed <= 6, (switches, missed)


def test_smoothing_reduces_jitter_on_a_still_face(rec: Recognizer) -> None:
    im = load_image(SAMPLES / "grace_hopper.jpg")
    rng = np.random.default_rng(0)
    frames = [np.clip(im.astype(np.int16) + rng.normal(0, 12, im.shape), 0, 255).astype(np.uint8)
              for _ in range(25)]

    def jitter(smoothing: float) -> float:
        probs = [np.array(list(r.faces[0].probabilities.values()))
                 for r in rec.track(frames, smoothing=smoothing)]
        return float(np.mean(np.abs(np.diff(np.stack(probs), axis=0))))

    raw, smooth = jitter(0.0), jitter(0.7)
    assert smooth < 0.6 * raw, (raw, smooth)


def test_smoothed_faces_keep_their_raw_probabilities_and_summaries_add_up(rec: Recognizer) -> None:
    frames, _ = crossing_clip(rec, 12)
    tracker = FaceTracker(smoothing=0.5)
    results = list(rec.track(frames, tracker=tracker))
    f = results[-1].faces[0]
    assert f.raw_probabilities is not None and set(f.raw_probabilities) == set(f.probabilities)
    d = f.to_dict()
    assert d["track_id"] == f.track_id and "raw_probabilities" in d
    sums = tracker.summaries()
    assert sum(s.frames for s in sums) == sum(len(r.faces) for r in results)
    for s in sums:
        assert s.first_frame <= s.last_frame
        assert sum(s.mean_probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert s.dominant_expression == max(s.mean_probabilities, key=s.mean_probabilities.get)
        assert s.yaw_range is not None and s.yaw_range[0] <= s.yaw_range[1]
        assert s.to_dict()["track_id"] == s.track_id


def test_a_track_unseen_too_long_is_closed_and_a_new_id_given(rec: Recognizer) -> None:
    im = load_image(SAMPLES / "grace_hopper.jpg")
    blank = np.full_like(im, 90)
    tracker = FaceTracker(max_age=2)
    ids = [f.track_id for r in rec.track([im, im, blank, blank, blank, im], tracker=tracker) for f in r.faces]
    assert ids == [0, 0, 1]
    ids = [f.track_id for r in rec.track([im, blank, im], tracker=FaceTracker(max_age=2)) for f in r.faces]
    assert ids == [0, 0]


def test_tracker_options_and_order_are_checked() -> None:
    with pytest.raises(ConfigError, match="smoothing"):
        FaceTracker(smoothing=1.0)
    t = FaceTracker()
    t.update([], frame=5)
    with pytest.raises(ConfigError, match="in order"):
        t.update([], frame=5)


def _write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(np.ascontiguousarray(f[:, :, ::-1]))
    vw.release()
    return path


def test_video_files_no_faces_one_frame_and_corrupt(rec: Recognizer, tmp_path: Path) -> None:
    blank = _write_clip(tmp_path / "blank.mp4", [np.full((240, 320, 3), 100, np.uint8)] * 5)
    res = list(rec.track(iter_video(blank)))
    assert len(res) == 5 and all(r.ok and r.faces == [] for r in res)
    one = _write_clip(tmp_path / "one.mp4", [load_image(SAMPLES / "grace_hopper.jpg")])
    res = list(rec.track(iter_video(one)))
    assert len(res) == 1 and len(res[0].faces) == 1 and res[0].faces[0].track_id == 0
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(ImageError, match="bad.mp4"):
        list(rec.track(iter_video(bad)))


def test_stream_source_reads_a_file_and_a_missing_camera_is_a_clear_error(tmp_path: Path) -> None:
    clip = _write_clip(tmp_path / "c.mp4", [np.full((64, 64, 3), v, np.uint8) for v in (10, 80, 160)])
    frames = list(open_stream(str(clip)))
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.index for f in open_stream(str(clip), max_frames=2)] == [0, 1]
    with pytest.raises(ImageError, match="cannot open camera 57"):
        list(open_stream(57))


def test_predict_cli_tracks_a_video_and_a_stream(rec: Recognizer, tmp_path: Path, capsys) -> None:
    import json

    from robustfer.cli import main

    frames, _ = crossing_clip(rec, 10)
    clip = _write_clip(tmp_path / "two.mp4", frames)
    out = tmp_path / "r.jsonl"
    assert main(["predict", str(clip), "-o", str(out), "--smooth", "0.5", "--no-progress"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 10 and all("track_id" in f and "raw_probabilities" in f for r in recs for f in r["faces"])
    tracks = json.loads((tmp_path / "r.jsonl.tracks.json").read_text())[str(clip)]
    assert 2 <= len(tracks) <= 3 and sum(t["frames"] for t in tracks) == sum(len(r["faces"]) for r in recs)
    text = capsys.readouterr().out
    assert "track(s)" in text and "track 0: frames 0-" in text
    # a stream source (here a file through OpenCV), headless, stopped after 4 frames
    out2 = tmp_path / "s.csv"
    assert main(["predict", "--stream", str(clip), "--max-frames", "4", "-o", str(out2), "-q"]) == 0
    rows = out2.read_text().splitlines()
    assert rows[0].startswith("source,frame,time_s,face,track,")
    assert len({r.split(",")[1] for r in rows[1:]}) == 4
    assert (tmp_path / "s.csv.tracks.json").exists()
    assert main(["predict", "x.jpg", "--smooth", "1.5"]) != 0
    assert "--smooth 1.5" in capsys.readouterr().err
