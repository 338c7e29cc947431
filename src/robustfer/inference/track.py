"""Faces followed through video: stable track ids, optional smoothing, a summary per track.

:class:`FaceTracker` links the faces of each new frame to the tracks it holds, in the manner of
SORT/ByteTrack but small enough to need nothing beyond numpy:

* each track predicts where its face is now from a constant-velocity model of its box centre
  (velocity smoothed over frames), so two faces that move past each other keep their ids;
* a face and a track are compared by the overlap (IoU) of the face's box with the predicted
  box, the distance between their centres in units of the track's box size, and -- when frames
  are given -- the cosine similarity of a 24 x 24 grey thumbnail of the face with the track's
  running mean thumbnail (appearance);
* pairs are matched greedily, best score first; a pair is allowed only when the centre distance
  is below ``max_distance`` box sizes and the box sizes differ by less than a factor 2;
* a face matched to no track starts a new one (ids count up from 0 and are never reused); a
  track unseen for more than ``max_age`` frames is closed.

With ``smoothing`` = a in (0, 1), each track's probabilities are an exponential moving average
``p_t = a p_(t-1) + (1 - a) q_t`` of the frame's raw probabilities ``q_t`` (``raw_probabilities``
keeps them); 0 gives the raw ones. :meth:`FaceTracker.summaries` gives, per track, the frames it
was seen in, its mean probabilities, the dominant expression and the range of its head pose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from robustfer.errors import ConfigError
from robustfer.inference.detect import iou


def thumbnail(image: np.ndarray, box: Sequence[float], size: int = 24) -> np.ndarray:
    """Zero-mean, unit-norm grey ``size`` x ``size`` thumbnail of the box (appearance)."""
    import cv2

    h, w = image.shape[:2]
    x1, y1 = int(max(0, min(w - 1, box[0]))), int(max(0, min(h - 1, box[1])))
    x2, y2 = int(max(x1 + 1, min(w, box[2]))), int(max(y1 + 1, min(h, box[3])))
    crop = image[y1:y2, x1:x2]
    if crop.ndim == 3:
        crop = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    v = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    v -= v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)


@dataclass
class TrackSummary:
    """One track over the whole video."""

    track_id: int
    frames: int
    first_frame: int
    last_frame: int
    first_time_s: float | None
    last_time_s: float | None
    mean_probabilities: dict[str, float]
    dominant_expression: str
    yaw_range: tuple[float, float] | None
    pitch_range: tuple[float, float] | None
    roll_range: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_probabilities"] = {k: round(v, 4) for k, v in self.mean_probabilities.items()}
        for k in ("yaw_range", "pitch_range", "roll_range"):
            if d[k] is not None:
                d[k] = [round(float(v), 1) for v in d[k]]
        return d


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    appearance: np.ndarray | None = None
    smoothed: np.ndarray | None = None
    frames: int = 0
    first_frame: int = 0
    first_time: float | None = None
    last_time: float | None = None
    prob_sum: np.ndarray | None = None
    poses: list[tuple[float, float, float]] = field(default_factory=list)

    def predicted(self, frame: int) -> np.ndarray:
        dt = frame - self.last_frame
        return self.box + np.tile(self.velocity * dt, 2)


class FaceTracker:
    """Give the faces of consecutive frames stable ``track_id`` s (see the module docstring).

    Args:
        max_age: frames a track may go unseen before it is closed.
        smoothing: EMA factor for probabilities in [0, 1); 0 = raw.
        max_distance: largest centre distance, in track box sizes, for a match.
        appearance_weight: weight of the thumbnail similarity in the match score.
    """

    def __init__(self, max_age: int = 15, smoothing: float = 0.0, max_distance: float = 1.0,
                 appearance_weight: float = 0.5) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing={smoothing}: use a value in [0, 1) (0 = raw probabilities).")
        if max_age < 0:
            raise ConfigError(f"max_age={max_age}: use 0 or more frames.")
        self.max_age = max_age
        self.smoothing = smoothing
        self.max_distance = max_distance
        self.appearance_weight = appearance_weight
        self._tracks: list[_Track] = []
        self._closed: list[_Track] = []
        self._next_id = 0
        self._class_names: tuple[str, ...] = ()
        self._frame = -1

    def _score(self, t: _Track, pred: np.ndarray, box: np.ndarray, app: np.ndarray | None) -> float | None:
        size = max(t.box[2] - t.box[0], t.box[3] - t.box[1], 1e-6)
        bsize = max(box[2] - box[0], box[3] - box[1], 1e-6)
        if not 0.5 < bsize / size < 2.0:
            return None
        pc = (pred[:2] + pred[2:]) / 2
        bc = (box[:2] + box[2:]) / 2
        dist = float(np.linalg.norm(pc - bc)) / size
        if dist > self.max_distance:
            return None
        s = iou(tuple(pred), tuple(box)) + (1.0 - dist)
        if app is not None and t.appearance is not None:
            s += self.appearance_weight * float(app @ t.appearance)
        return s

    def update(self, faces: list, frame: int | None = None, image: np.ndarray | None = None,
               time_s: float | None = None) -> list:
        """Assign ``track_id`` to each :class:`~robustfer.inference.recognizer.FaceResult` of one
        frame (in place; also returned), smoothing their probabilities if asked."""
        frame = self._frame + 1 if frame is None else int(frame)
        if frame <= self._frame:
            raise ConfigError(f"frame {frame} comes after frame {self._frame}: give frames in order.")
        self._frame = frame
        boxes = [np.asarray(f.box, dtype=np.float64) for f in faces]
        apps = [thumbnail(image, f.box) if image is not None else None for f in faces]
        preds = [t.predicted(frame) for t in self._tracks]
        pairs = []
        for i, (t, pred) in enumerate(zip(self._tracks, preds)):
            for j, (box, app) in enumerate(zip(boxes, apps)):
                s = self._score(t, pred, box, app)
                if s is not None:
                    pairs.append((s, i, j))
        pairs.sort(key=lambda p: -p[0])
        used_t: set[int] = set()
        match: dict[int, int] = {}
        for _, i, j in pairs:
            if i in used_t or j in match:
                continue
            used_t.add(i)
            match[j] = i
        for j, f in enumerate(faces):
            if j in match:
                t = self._tracks[match[j]]
                dt = max(1, frame - t.last_frame)
                v = ((boxes[j][:2] + boxes[j][2:]) / 2 - (t.box[:2] + t.box[2:]) / 2) / dt
                t.velocity = 0.5 * t.velocity + 0.5 * v if t.frames > 1 else v
            else:
                t = _Track(self._next_id, boxes[j], frame, first_frame=frame, first_time=time_s)
                self._next_id += 1
                self._tracks.append(t)
            self._observe(t, f, boxes[j], apps[j], frame, time_s)
        alive = []
        for t in self._tracks:
            (alive if frame - t.last_frame <= self.max_age else self._closed).append(t)
        self._tracks = alive
        return faces

    def _observe(self, t: _Track, f: Any, box: np.ndarray, app: np.ndarray | None, frame: int,
                 time_s: float | None) -> None:
        t.box, t.last_frame, t.last_time = box, frame, time_s
        if app is not None:
            t.appearance = app if t.appearance is None else 0.8 * t.appearance + 0.2 * app
            t.appearance = t.appearance / max(float(np.linalg.norm(t.appearance)), 1e-6)
        names = tuple(f.probabilities)
        self._class_names = self._class_names or names
        raw = np.array([f.probabilities[n] for n in names], dtype=np.float64)
        t.frames += 1
        t.prob_sum = raw.copy() if t.prob_sum is None else t.prob_sum + raw
        if f.pose.yaw is not None:
            t.poses.append((f.pose.yaw, f.pose.pitch, f.pose.roll))
        f.track_id = t.track_id
        if self.smoothing > 0:
            t.smoothed = raw if t.smoothed is None else self.smoothing * t.smoothed + (1 - self.smoothing) * raw
            f.raw_probabilities = dict(f.probabilities)
            f.probabilities = {n: float(v) for n, v in zip(names, t.smoothed)}
            top = int(np.argmax(t.smoothed))
            f.expression, f.confidence = names[top], float(t.smoothed[top])

    def summaries(self) -> list[TrackSummary]:
        """One :class:`TrackSummary` per track seen so far (open and closed), by id."""
        out = []
        for t in sorted(self._closed + self._tracks, key=lambda t: t.track_id):
            mean = t.prob_sum / max(t.frames, 1) if t.prob_sum is not None else np.zeros(0)
            probs = {n: float(v) for n, v in zip(self._class_names, mean)}
            poses = np.array(t.poses) if t.poses else None

            def rng(k: int, poses: np.ndarray | None = poses) -> tuple[float, float] | None:
                if poses is None or poses[:, k].dtype == object:
                    return None
                return float(np.min(poses[:, k])), float(np.max(poses[:, k]))

            out.append(TrackSummary(
                t.track_id, t.frames, t.first_frame, t.last_frame, t.first_time, t.last_time, probs,
                max(probs, key=probs.get) if probs else "", rng(0), rng(1), rng(2)))
        return out
