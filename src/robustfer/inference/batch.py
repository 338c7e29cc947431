"""``robustfer predict``: images, folders and videos to a results file, a table and drawings.

* Folders are walked recursively for image and video files (by extension; other files are
  counted and reported in one line). Files named explicitly are tried whatever their extension.
* Videos give one record per sampled frame (``--stride``), one row per face per frame.
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

from robustfer.errors import ConfigError, RobustferError
from robustfer.inference.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, iter_video, load_image
from robustfer.inference.recognizer import ImageResult, Recognizer, to_records


@dataclass
class PredictSummary:
    files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    faces: int = 0
    frames: int = 0
    skipped_done: int = 0
    ignored: int = 0

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
            pose = f"{pose} ({f.pose.yaw:+.0f}°)"
        probs = " ".join(f"{k} {v:.2f}" for k, v in sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:top])
        rows.append(f"{name:<32} {i:>4}  {box:<22} {pose:<20} {f.expression:<10} {probs}")
    return rows


TABLE_HEADER = f"{'file':<32} {'face':>4}  {'box (x1,y1,x2,y2)':<22} {'pose':<20} {'top':<10} probabilities"


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


def _video_results(rec: Recognizer, path: Path, stride: int, detect: bool) -> Iterator[tuple[ImageResult, Any]]:
    batch: list[Any] = []

    def flush() -> Iterator[tuple[ImageResult, Any]]:
        res = rec.predict_batch([fr.image for fr in batch], detect=detect, names=[str(path)] * len(batch))
        for fr, r in zip(batch, res):
            r.frame, r.time_s = fr.index, fr.time_s
            yield r, fr
        batch.clear()

    for fr in iter_video(path, stride):
        batch.append(fr)
        if len(batch) >= 8:
            yield from flush()
    if batch:
        yield from flush()


def run_predict(paths: Sequence[str | Path], rec: Recognizer, output: str | Path | None = None,
                annotate: str | Path | None = None, stride: int = 1, resume: bool = False,
                detect: bool = True, recursive: bool = True, progress: bool = True,
                table: bool = True, out: TextIO | None = None) -> PredictSummary:
    """Process files and folders; see the module docstring."""
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
                    try:
                        for r, fr in _video_results(rec, path, stride, detect):
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
