"""Turning a detected face into the crop a model was trained on.

Three ways, chosen per face:

* **mesh** (when the detector gives a face mesh: the default BlazeFace front end): the
  similarity transform (rotation, uniform scale, translation; Umeyama, IEEE TPAMI 1991) that
  best maps all 468 mesh points onto where FER2013 crops put them (:func:`mesh_template`,
  measured on frontal FER2013Train faces). Fitting the whole face keeps the scale right when
  the head is turned, where the distance between the eyes shrinks;
* **aligned** (when the detector gives only landmarks): the similarity that maps the two eye
  centres onto where the training crops have them (:data:`FER_EYES`, measured), so the eyes
  end up level;
* **box** (otherwise): a square crop around the detector's box with the margin the model's
  preprocessing asks for (``Preprocess.crop_scale``, ``crop_shift``); FER2013/FERPlus faces
  are loose square crops of this kind. Parts of the crop outside the image are filled by
  replicating the border.

The template and margins come from the model's :class:`~robustfer.data.transforms.Preprocess`
(stored in its checkpoint), so inference matches training.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from robustfer.data.aligned import set_face_cropper
from robustfer.data.landmarks import TEMPLATE_CROP_SCALE
from robustfer.inference.detect import Detection

#: Eye centres (image-left eye first) in FER2013/FERPlus crops, in units of the crop side:
#: medians of dlib's 5-point landmarks on 1,251 of 1,500 random FER2013Train faces (padded by
#: 16 px and upscaled 4x so dlib could see them): (0.3125, 0.398) and (0.6797, 0.396), i.e.
#: eyes 0.367 apart, centred, 0.397 down (``benchmarks/calibrate_face_crop.py --landmarks``).
#: Made symmetric here.
FER_EYES = np.array([[0.5 - 0.1836, 0.397], [0.5 + 0.1836, 0.397]])
#: ``crop_scale`` of the Haar box measured on the same kind of crops (Preprocess default).
FER_CROP_SCALE = TEMPLATE_CROP_SCALE


def square_box(box: tuple[float, float, float, float], scale: float, shift: float
               ) -> tuple[float, float, float, float]:
    """A square of side ``scale * max(w, h)`` centred on the box, moved down by ``shift * h``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + shift * h
    side = scale * max(w, h)
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def crop_square(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The square ``box`` of ``image`` resized to ``size`` x ``size``.

    Parts outside the image replicate the border. Shrinking uses area averaging (no aliasing).
    """
    import cv2

    h, w = image.shape[:2]
    x1, y1 = int(round(box[0])), int(round(box[1]))
    side = max(1, int(round(box[2] - box[0])))
    x2, y2 = x1 + side, y1 + side
    pad = (max(0, -y1), max(0, y2 - h), max(0, -x1), max(0, x2 - w))
    if any(pad):
        image = cv2.copyMakeBorder(image, *pad, borderType=cv2.BORDER_REPLICATE)
        x1, y1 = x1 + pad[2], y1 + pad[0]
    return _resize(np.ascontiguousarray(image[y1:y1 + side, x1:x1 + side]), size)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform that best maps ``src`` points to ``dst`` (least squares).

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", IEEE TPAMI 13(4), 1991, eqs. (34)-(42).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)                 # eq. (36)
    cov = d0.T @ s0 / len(src)                         # eq. (38)
    u, d, vt = np.linalg.svd(cov)
    sgn = np.eye(2)
    if np.linalg.det(cov) < 0:                         # eq. (39)
        sgn[1, 1] = -1
    r = u @ sgn @ vt                                   # eq. (40)
    c = np.trace(np.diag(d) @ sgn) / max(var_s, 1e-12)  # eq. (42)
    t = mu_d - c * r @ mu_s                            # eq. (41)
    return np.hstack([c * r, t[:, None]])


@lru_cache(maxsize=1)
def _fer_mesh() -> np.ndarray | None:
    path = Path(__file__).resolve().parent.parent / "weights" / "face" / "fer_mesh_template.npy"
    return np.load(path).astype(np.float64) if path.is_file() else None


def mesh_template(crop_scale: float) -> np.ndarray | None:
    """Where the 468 face-mesh points go in a crop of margin ``crop_scale`` (crop-side units):
    the median of each point over 848 frontal FER2013Train faces (|yaw|, |pitch| < 15; seed 0;
    ``python benchmarks/calibrate_face_crop.py --mesh``), shrunk about the centre for looser
    crops. ``None`` if the template file is missing."""
    t = _fer_mesh()
    return None if t is None else 0.5 + (t - 0.5) * (FER_CROP_SCALE / crop_scale)


def eye_template(crop_scale: float) -> np.ndarray:
    """Where the eyes go in a crop of margin ``crop_scale`` (crop-side units, image-left eye
    first): :data:`FER_EYES`, shrunk about the centre for looser crops."""
    return 0.5 + (FER_EYES - 0.5) * (FER_CROP_SCALE / crop_scale)


def face_transform(det: Detection, size: int, crop_scale: float, use_landmarks: bool = True
                   ) -> tuple[np.ndarray | None, str]:
    """The 2x3 similarity from image pixels to the ``size`` x ``size`` crop, and its method
    (``"mesh"`` or ``"aligned"``); ``(None, "box")`` when the face is cut by its box instead."""
    if not use_landmarks:
        return None, "box"
    mesh = det.extra.get("mesh") if det.extra else None
    template = mesh_template(crop_scale) if mesh is not None else None
    if template is not None and np.isfinite(mesh[:, :2]).all():
        return umeyama(np.asarray(mesh, dtype=np.float64)[:, :2], template * size), "mesh"
    if det.landmarks is not None and np.isfinite(det.landmarks[:2]).all():
        # Two eye centres fix a similarity exactly (rotation, scale, shift); the nose and mouth
        # points mean different things for different detectors, so they are not used.
        return umeyama(np.asarray(det.landmarks[:2], dtype=np.float64), eye_template(crop_scale) * size), "aligned"
    return None, "box"


def align_face(image: np.ndarray, det: Detection, size: int, crop_scale: float, crop_shift: float,
               use_landmarks: bool = True) -> tuple[np.ndarray, str]:
    """The face crop for a detection: ``(crop uint8 (size, size, C), method)``."""
    import cv2

    m, how = face_transform(det, size, crop_scale, use_landmarks)
    if m is None:
        return crop_square(image, square_box(det.box, crop_scale, crop_shift), size), "box"
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    # Warp at the face's native resolution, then shrink with area averaging.
    native = max(size, min(8 * size, int(round(size / max(scale, 1e-6)))))
    m = m * (native / size)
    crop = cv2.warpAffine(image, m, (native, native), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _resize(crop, size), how


def crop_points(det: Detection, size: int, crop_scale: float, crop_shift: float,
                use_landmarks: bool = True) -> np.ndarray | None:
    """The detection's landmarks in pixels of the crop :func:`align_face` cuts for it.

    ``None`` when the detection has no landmarks. Points the detector did not give stay NaN.
    """
    if det.landmarks is None:
        return None
    pts = np.asarray(det.landmarks, dtype=np.float64).reshape(-1, 2)
    m, _ = face_transform(det, size, crop_scale, use_landmarks)  # the same transform as align_face
    if m is not None:
        return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)
    x1, y1, x2, _ = square_box(det.box, crop_scale, crop_shift)
    side = max(1, int(round(x2 - x1)))
    origin = np.array([int(round(x1)), int(round(y1))], dtype=np.float64)
    # pixel centres onto pixel centres, as the resize does
    return ((pts - origin + 0.5) * (size / side) - 0.5).astype(np.float32)


_DETECTORS: dict[str, Any] = {}


def largest_face_crop(image: np.ndarray, size: int, crop_scale: float, crop_shift: float,
                      detector: str = "blazeface:thorough") -> np.ndarray | None:
    """The crop of the largest face in ``image`` as the Recognizer cuts it (``None``: no face).
    Registered with :func:`robustfer.data.aligned.set_face_cropper` for training-data crops."""
    from robustfer.inference.detect import create_detector

    if detector not in _DETECTORS:
        _DETECTORS[detector] = create_detector(detector)
    faces = _DETECTORS[detector].detect(image)
    if not faces:
        return None
    best = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return align_face(image, best, size, crop_scale, crop_shift)[0]


set_face_cropper(largest_face_crop)
