"""Drawing results onto images: boxes, landmarks (and the face mesh, thinned), track id, top
expression, head pose and a probability bar chart."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robustfer.inference.recognizer import FaceResult

# One colour per canonical expression (RGB), repeated for unknown names.
_COLORS = {"neutral": (150, 150, 150), "happiness": (255, 200, 0), "surprise": (0, 200, 255),
           "sadness": (60, 110, 255), "anger": (255, 40, 40), "disgust": (120, 200, 40),
           "fear": (180, 80, 255), "contempt": (255, 120, 200)}


def _color(name: str) -> tuple[int, int, int]:
    return _COLORS.get(name, (255, 255, 255))


def draw_faces(image: np.ndarray, faces: Sequence[FaceResult], bars: bool = True) -> np.ndarray:
    """A copy of the RGB ``image`` with each face's box, label, pose and probabilities drawn."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    scale = max(0.4, min(1.2, max(h, w) / 900))
    thick = max(1, int(round(2 * scale)))
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        c = _color(f.expression)
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thick)
        if f.mesh is not None:
            for px, py in f.mesh[::3, :2]:
                cv2.circle(out, (int(px), int(py)), 1, (0, 160, 255), -1)
        if f.landmarks is not None:
            for px, py in f.landmarks[np.isfinite(f.landmarks).all(1)]:
                cv2.circle(out, (int(px), int(py)), thick + 1, (0, 255, 0), -1)
        pose = f.pose.yaw_bin_name or "?"
        if f.pose.yaw is not None:
            pose = f"y{f.pose.yaw:+.0f} p{f.pose.pitch:+.0f} r{f.pose.roll:+.0f}"
        who = f"#{i}" if f.track_id is None else f"id {f.track_id}"
        label = f"{who} {f.expression} {f.confidence:.2f} | {pose}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, thick)
        ty = y1 - 4 if y1 - th - base - 4 > 0 else y2 + th + 4
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + base), (0, 0, 0), -1)
        cv2.putText(out, label, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, c, thick,
                    cv2.LINE_AA)
        if bars:
            bw = max(40, int((x2 - x1) * 0.9))
            bh = max(6, int(9 * scale))
            by = min(h - bh * len(f.probabilities) - 2, y2 + 6 + (th + base + 6 if ty > y2 else 0))
            for j, (name, p) in enumerate(sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3]):
                yy = by + j * (bh + 2)
                cv2.rectangle(out, (x1, yy), (x1 + bw, yy + bh), (40, 40, 40), -1)
                cv2.rectangle(out, (x1, yy), (x1 + int(bw * p), yy + bh), _color(name), -1)
                cv2.putText(out, f"{name} {p:.2f}", (x1 + 2, yy + bh - 1), cv2.FONT_HERSHEY_SIMPLEX,
                            0.33 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def save_rgb(path: str, image: np.ndarray) -> None:
    """Write an RGB array with OpenCV (which expects BGR)."""
    import cv2

    from robustfer.errors import ImageError

    if not cv2.imwrite(path, np.ascontiguousarray(image[:, :, ::-1])):
        raise ImageError(f"cannot write {path}; check the folder exists and the extension is an image type.")
