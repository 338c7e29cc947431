"""Tracking through video: identity switches and probability jitter, with and without the tracker.

Two clips, 640x480, made from the bundled sample photos (no data needed):

* ``crossing``: Grace Hopper's and the astronaut's faces (150 px) walk past each other, one
  left to right and one right to left, overlapping in the middle frames (60 frames);
* ``photos``: the two photos side by side, slowly zooming and panning, every frame
  JPEG-compressed at quality 60-90 and with sensor noise (sigma 6), like a webcam (75 frames).

For each clip: how often *face index 0* (the per-frame order without a tracker) changes person,
identity switches of ``track_id`` (a person's id changing), frames where a person was missed,
false faces (detections more than 0.6 face widths from every true centre; each makes a track
of its own), and the mean absolute frame-to-frame change of each person's probabilities, raw
and with ``smoothing`` 0.6. A face is assigned to a person by the nearest true centre.

    python benchmarks/tracking.py
"""
from __future__ import annotations

import numpy as np
import cv2

from robustfer import Recognizer
from robustfer.inference import FaceTracker, load_image


def face_tile(rec: Recognizer, name: str, side: int) -> np.ndarray:
    im = load_image(f"samples/{name}")
    x1, y1, x2, y2 = rec.predict(im)[0].box
    cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, 1.4 * max(x2 - x1, y2 - y1)
    return cv2.resize(im[int(cy - s / 2):int(cy + s / 2), int(cx - s / 2):int(cx + s / 2)], (side, side),
                      interpolation=cv2.INTER_AREA)


def crossing(rec: Recognizer, n: int = 60):
    a, b = face_tile(rec, "grace_hopper.jpg", 150), face_tile(rec, "astronaut.jpg", 150)
    frames, truth = [], []
    for t in range(n):
        im = np.full((480, 640, 3), 70, np.uint8)
        xa, xb = int(20 + 450 * t / (n - 1)), int(470 - 450 * t / (n - 1))
        im[60:210, xb:xb + 150] = b
        im[190:340, xa:xa + 150] = a
        frames.append(im)
        truth.append([(xa + 75, 265), (xb + 75, 135)])
    return frames, truth


def photos(rec: Recognizer, n: int = 75, seed: int = 0):
    rng = np.random.default_rng(seed)
    left = cv2.resize(load_image("samples/grace_hopper.jpg"), (300, 352))
    right = cv2.resize(load_image("samples/astronaut.jpg"), (300, 300))
    canvas = np.full((560, 700, 3), 40, np.uint8)
    canvas[100:452, 20:320] = left
    canvas[130:430, 380:680] = right
    fl = rec.predict(canvas)
    centres = sorted([((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in fl])
    frames, truth = [], []
    for t in range(n):
        z = 1.0 + 0.15 * np.sin(2 * np.pi * t / n)
        dx = 20 * np.sin(2 * np.pi * t / n * 2)
        m = np.array([[z, 0, -(z - 1) * 350 + dx], [0, z, -(z - 1) * 280]], np.float64)
        im = cv2.warpAffine(canvas, m, (700, 560))[40:520, 30:670]
        im = np.clip(im + rng.normal(0, 6, im.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", im[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 91))])
        frames.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy())
        truth.append([(c[0] * z + m[0, 2] - 30, c[1] * z + m[1, 2] - 40) for c in centres])
    return frames, truth


def person_of(face, centres) -> int | None:
    """The person whose true face centre is nearest, or None (a false face) when that centre is
    more than 0.6 face widths away."""
    c = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
    d = [np.linalg.norm(c - np.array(t)) for t in centres]
    k = int(np.argmin(d))
    return k if d[k] <= 0.6 * (face.box[2] - face.box[0]) else None


def measure(rec: Recognizer, frames, truth, smoothing: float) -> dict:
    tracker = FaceTracker(smoothing=smoothing)
    last_id: dict[int, int] = {}
    probs: dict[int, list] = {}
    switches = missed = index0_changes = false = 0
    prev0 = None
    for r, centres in zip(rec.track(frames, tracker=tracker), truth):
        seen = set()
        for k, f in enumerate(r.faces):
            p = person_of(f, centres)
            if p is None:
                false += 1
                continue
            seen.add(p)
            if p in last_id and last_id[p] != f.track_id:
                switches += 1
            last_id[p] = f.track_id
            probs.setdefault(p, []).append(np.array(list(f.probabilities.values())))
            if k == 0:
                index0_changes += prev0 is not None and p != prev0
                prev0 = p
        missed += len(centres) - len(seen)
    jitter = float(np.mean([np.abs(np.diff(np.stack(v), axis=0)).mean() for v in probs.values() if len(v) > 1]))
    return {"frames": len(frames), "index0_changes": index0_changes, "id_switches": switches,
            "missed": missed, "false": false, "tracks": len(tracker.summaries()), "jitter": jitter}


def main() -> None:
    rec = Recognizer.from_pretrained("default")
    print(f"{'clip':<10}{'smoothing':>10}{'frames':>8}{'index-0 changes':>17}{'id switches':>13}"
          f"{'missed':>8}{'false':>7}{'tracks':>8}{'mean |dp|':>11}")
    for name, make in (("crossing", crossing), ("photos", photos)):
        frames, truth = make(rec)
        for sm in (0.0, 0.6):
            m = measure(rec, frames, truth, sm)
            print(f"{name:<10}{sm:>10.1f}{m['frames']:>8}{m['index0_changes']:>17}{m['id_switches']:>13}"
                  f"{m['missed']:>8}{m['false']:>7}{m['tracks']:>8}{m['jitter']:>11.4f}")


if __name__ == "__main__":
    main()
