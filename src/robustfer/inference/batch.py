"""``robustfer predict``: images, folders and videos to a results file, a table and drawings.

* Folders are walked recursively for image and video files (by extension; other files are
  counted and reported in one line). Files named explicitly are tried whatever their extension.
* Videos give one record per sampled frame (``--stride``), one row per face per frame; faces are
  tracked through the video (:class:`~robustfer.inference.track.FaceTracker`): each carries a
  stable ``track_id``, ``--smooth A`` smooths each track's probabilities (EMA, 0 = raw), and a
  summary per track (frames, mean probabilities, dominant expression, pose range) is printed
  and, with ``--output``, written to ``OUTPUT.tracks.json``.
* ``--camera N`` / ``--stream URL`` read a live source (:func:`run_stream`) until it ends or
  Ctrl-C, writing every frame's record as it goes.
* ``--output results.jsonl`` (one JSON object per image or frame) or ``results.csv`` (one row
  per face) is written **incrementally**: every finished file is flushed and then listed in
  ``OUTPUT.done``, so a killed run keeps what it finished and ``--resume`` skips those files
  (rows of a file that was cut off half-way are dropped and the file is redone).
* A file that cannot be read is reported on one line and the batch goes on; the exit status is
  1 when anything failed, 0 otherwise.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from robustfer.errors import ConfigError, RobustferError
from robustfer.inference.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, iter_video, load_image, open_stream
from robustfer.inference.recognizer import ImageResult, Recognizer, to_records


@dataclass
class PredictSummary:
    files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    faces: int = 0
    frames: int = 0
    skipped_done: int = 0
    ignored: int = 0
    tracks: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


def collect_inputs(paths: Sequence[str | Path], recursive: bool = True) -> tuple[list[Path], list[tuple[str, str]], int]:
    """Files to process, errors for paths that do not exist, and the count of ignored files."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    ignored = 0
    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    for p in map(Path, paths):
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            for f in sorted(walker):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.suffix.lower() in media:
                    files.append(f)
                else:
                    ignored += 1
        elif p.is_file():
            files.append(p)
        else:
            missing.append((str(p), f"{p} does not exist; check the path."))
    return files, missing, ignored


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


class ResultWriter:
    """Incremental JSONL/CSV writer with a ``.done`` list for ``--resume``."""

    def __init__(self, path: str | Path, class_names: Sequence[str], resume: bool) -> None:
        self.path = Path(path)
        self.kind = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(self.path.suffix.lower())
        if self.kind is None:
            raise ConfigError(f"--output {self.path}: use a .jsonl or .csv file name.")
        self.done_path = self.path.with_name(self.path.name + ".done")
        self.tracks_path = self.path.with_name(self.path.name + ".tracks.json")
        self.columns = ["source", "frame", "time_s", "face", "track", "x1", "y1", "x2", "y2", "score",
                        "expression", "confidence", "yaw", "pitch", "roll", "yaw_bin", "crop",
                        *[f"p_{c}" for c in class_names], "error"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if resume and self.path.exists():
            self.done = set(self.done_path.read_text().splitlines()) if self.done_path.exists() else set()
            self._keep_only_done()
        else:
            self.done_path.unlink(missing_ok=True)
            self.tracks_path.unlink(missing_ok=True)
            self._start_fresh()
        self._f: TextIO = open(self.path, "a", newline="")
        self._done_f: TextIO = open(self.done_path, "a")
        self._csv = csv.DictWriter(self._f, self.columns, extrasaction="ignore") if self.kind == "csv" else None

    def _start_fresh(self) -> None:
        with open(self.path, "w", newline="") as f:
            if self.kind == "csv":
                csv.DictWriter(f, self.columns).writeheader()

    def _keep_only_done(self) -> None:
        """Drop rows of files that were not finished (a run killed half-way through one)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(self.path, newline="") as src, open(tmp, "w", newline="") as dst:
            if self.kind == "csv":
                rows = csv.DictReader(src)
                w = csv.DictWriter(dst, self.columns, extrasaction="ignore")
                w.writeheader()
                for row in rows:
                    if row.get("source") in self.done:
                        w.writerow(row)
            else:
                for line in src:
                    try:
                        if json.loads(line).get("source") in self.done:
                            dst.write(line if line.endswith("\n") else line + "\n")
                    except json.JSONDecodeError:
                        continue  # a line cut off by a kill
        os.replace(tmp, self.path)

    def write(self, results: Iterable[ImageResult]) -> None:
        for r in results:
            if self._csv is not None:
                for row in to_records([r]):
                    self._csv.writerow(row)
            else:
                self._f.write(json.dumps(r.to_dict()) + "\n")

    def finish(self, source: str) -> None:
        """Flush the rows of ``source`` and record it as done."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._done_f.write(source + "\n")
        self._done_f.flush()
        self.done.add(source)

    def close(self) -> None:
        self._f.close()
        self._done_f.close()


def format_face_rows(r: ImageResult, top: int = 3) -> list[str]:
    """Readable table rows for one image/frame."""
    name = r.source + (f" @frame {r.frame}" if r.frame is not None else "")
    if r.error:
        return [f"{name}: ERROR {r.error}"]
    if not r.faces:
        return [f"{name:<32} {'-':>4}  no face found"]
    rows = []
    for i, f in enumerate(r.faces):
        box = "({:.0f},{:.0f},{:.0f},{:.0f})".format(*f.box)
        pose = f.pose.yaw_bin_name or "?"
        if f.pose.yaw is not None:
            pose = f"{f.pose.yaw:+4.0f} {f.pose.pitch:+4.0f} {f.pose.roll:+4.0f} {pose}"
        face = str(i) if f.track_id is None else f"{i}#{f.track_id}"
        lm = "-" if f.landmarks is None else str(int(np.isfinite(f.landmarks).all(1).sum()))
        probs = " ".join(f"{k} {v:.2f}" for k, v in sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:top])
        rows.append(f"{name:<32} {face:>5}  {box:<22} {pose:<26} {lm:>3}  {f.expression:<10} {probs}")
    return rows


TABLE_HEADER = (f"{'file':<32} {'face':>5}  {'box (x1,y1,x2,y2)':<22} {'yaw pitch roll (deg), bin':<26} "
                f"{'lm':>3}  {'top':<10} probabilities")


def _annotated_path(annotate_dir: Path, src: Path, roots: Sequence[Path], video: bool) -> Path:
    rel = src.name
    for root in roots:
        if root.is_dir():
            try:
                rel = str(src.relative_to(root))
                break
            except ValueError:
                continue
    out = annotate_dir / rel
    return out.with_suffix(".mp4") if video else out.with_suffix(".jpg")


def _video_results(rec: Recognizer, frames: Iterable[Any], name: str, detect: bool, tracker: Any
                   ) -> Iterator[tuple[ImageResult, Any]]:
    """Each frame's result (faces tracked) with the frame itself."""
    if not detect:  # whole frames as crops: nothing to track
        for fr in frames:
            r = rec.predict_batch([fr.image], detect=False, names=[name])[0]
            r.frame, r.time_s = fr.index, fr.time_s
            yield r, fr
        return
    kept: list[Any] = []

    def remember(it: Iterable[Any]) -> Iterator[Any]:
        for fr in it:
            kept.append(fr)
            yield fr

    for r in rec.track(remember(frames), tracker=tracker):
        r.source = name
        yield r, kept.pop(0)


def track_lines(summaries: Sequence[Any]) -> list[str]:
    """Readable per-track summary lines."""
    lines = []
    for s in summaries:
        yaw = "" if s.yaw_range is None else f", yaw {s.yaw_range[0]:+.0f}..{s.yaw_range[1]:+.0f}°"
        lines.append(f"  track {s.track_id}: frames {s.first_frame}-{s.last_frame} ({s.frames} seen), "
                     f"mostly {s.dominant_expression} ({s.mean_probabilities.get(s.dominant_expression, 0):.2f})"
                     f"{yaw}")
    return lines


def _write_tracks(path: Path, source: str, summaries: Sequence[Any]) -> None:
    """Add one video's track summaries to ``path`` (a JSON object: source -> tracks)."""
    from robustfer.runtime.checkpoint import atomic_write

    data = json.loads(path.read_text()) if path.exists() else {}
    data[source] = [s.to_dict() for s in summaries]
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def run_predict(paths: Sequence[str | Path], rec: Recognizer, output: str | Path | None = None,
                annotate: str | Path | None = None, stride: int = 1, resume: bool = False,
                detect: bool = True, recursive: bool = True, progress: bool = True,
                table: bool = True, out: TextIO | None = None, smoothing: float = 0.0) -> PredictSummary:
    """Process files and folders; see the module docstring."""
    from robustfer.inference.track import FaceTracker

    from tqdm import tqdm

    from robustfer.inference.draw import draw_faces, save_rgb

    out = out or sys.stdout
    files, missing, ignored = collect_inputs(paths, recursive)
    summary = PredictSummary(ignored=ignored)
    for name, msg in missing:
        print(f"robustfer: {msg}", file=sys.stderr)
        summary.failed.append((name, msg))
    writer = ResultWriter(output, rec.class_names, resume) if output else None
    if resume and writer is None:
        raise ConfigError("--resume needs --output (the results file to continue).")
    roots = [Path(p) for p in paths]
    annotate_dir = Path(annotate) if annotate else None
    if table:
        print(TABLE_HEADER, file=out)
    bar = tqdm(files, desc="files", unit="file", disable=not progress, file=sys.stderr)

    def emit(r: ImageResult) -> None:
        summary.faces += len(r.faces)
        if writer is not None:
            writer.write([r])
        if table:
            for line in format_face_rows(r):
                tqdm.write(line, file=out)

    try:
        for path in bar:
            src = str(path)
            if writer is not None and src in writer.done:
                summary.skipped_done += 1
                continue
            summary.files += 1
            try:
                if is_video(path):
                    vw = None
                    tracker = FaceTracker(smoothing=smoothing)
                    try:
                        for r, fr in _video_results(rec, iter_video(path, stride), src, detect, tracker):
                            summary.frames += 1
                            emit(r)
                            if annotate_dir is not None:
                                import cv2

                                if vw is None:
                                    dst = _annotated_path(annotate_dir, path, roots, True)
                                    dst.parent.mkdir(parents=True, exist_ok=True)
                                    cap = cv2.VideoCapture(src)
                                    fps = (cap.get(cv2.CAP_PROP_FPS) or 25.0) / stride
                                    cap.release()
                                    h, w = fr.image.shape[:2]
                                    vw = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                                vw.write(draw_faces(fr.image, r.faces)[:, :, ::-1].copy())
                    finally:
                        if vw is not None:
                            vw.release()
                    tracks = tracker.summaries()
                    summary.tracks += len(tracks)
                    if table:
                        for line in [f"{src}: {len(tracks)} track(s)", *track_lines(tracks)]:
                            tqdm.write(line, file=out)
                    if writer is not None:
                        _write_tracks(writer.tracks_path, src, tracks)
                else:
                    image = load_image(path, max_pixels=rec.max_pixels)
                    r = rec.predict_batch([image], detect=detect, names=[src])[0]
                    emit(r)
                    if annotate_dir is not None:
                        dst = _annotated_path(annotate_dir, path, roots, False)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        save_rgb(str(dst), draw_faces(image, r.faces))
            except RobustferError as e:
                msg = str(e) if src in str(e) else f"{src}: {e}"
                tqdm.write(f"robustfer: {msg}", file=sys.stderr)
                summary.failed.append((src, str(e)))
                if writer is not None:
                    writer.write([ImageResult(src, [], str(e))])
            if writer is not None:
                writer.finish(src)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return summary


def run_stream(source: int | str, rec: Recognizer, output: str | Path | None = None,
               annotate: str | Path | None = None, stride: int = 1, smoothing: float = 0.0,
               max_frames: int | None = None, show: bool = False, table: bool = True,
               out: TextIO | None = None) -> PredictSummary:
    """A camera or stream, frame by frame, until it ends, ``max_frames``, or Ctrl-C.

    Every frame's record is written and flushed as soon as it is made, the annotated video is
    finalised and the track summaries written on the way out, so nothing finished is lost when
    the run is interrupted. ``show`` opens a live window (needs an OpenCV build with GUI
    support: ``pip install opencv-python`` instead of ``opencv-python-headless``); without a
    display the run is headless and writes only files.
    """
    import cv2

    from robustfer.inference.draw import draw_faces
    from robustfer.inference.track import FaceTracker

    out = out or sys.stdout
    name = f"camera:{source}" if str(source).isdigit() else str(source)
    if show and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"):
        raise ConfigError("--show needs a display; run without it (headless: results go to --output).")
    writer = ResultWriter(output, rec.class_names, False) if output else None
    tracker = FaceTracker(smoothing=smoothing)
    summary = PredictSummary(files=1)
    vw = None
    if table:
        print(TABLE_HEADER, file=out)
    try:
        for r, fr in _video_results(rec, open_stream(source, stride, max_frames=max_frames), name, True, tracker):
            summary.frames += 1
            summary.faces += len(r.faces)
            if writer is not None:
                writer.write([r])
                writer._f.flush()
            if table:
                for line in format_face_rows(r):
                    print(line, file=out, flush=True)
            if annotate is not None or show:
                drawn = draw_faces(fr.image, r.faces)
                if annotate is not None:
                    if vw is None:
                        dst = Path(annotate) / "stream.mp4"
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        h, w = drawn.shape[:2]
                        vw = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
                    vw.write(np.ascontiguousarray(drawn[:, :, ::-1]))
                if show:
                    try:
                        cv2.imshow("robustfer", np.ascontiguousarray(drawn[:, :, ::-1]))
                        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                            break
                    except cv2.error:
                        raise ConfigError("this OpenCV has no window support; pip install opencv-python "
                                          "(instead of opencv-python-headless), or run without --show.") from None
    except KeyboardInterrupt:
        print("robustfer: stopped (Ctrl-C); everything up to here is written.", file=sys.stderr)
    finally:
        if vw is not None:
            vw.release()
        tracks = tracker.summaries()
        summary.tracks = len(tracks)
        if table:
            for line in [f"{name}: {len(tracks)} track(s)", *track_lines(tracks)]:
                print(line, file=out)
        if writer is not None:
            writer.finish(name)
            _write_tracks(writer.tracks_path, name, tracks)
            writer.close()
    return summary
