"""Face detectors: a small interface, OpenCV Haar cascades (default), dlib, and YuNet.

Every detector maps an RGB uint8 image to a list of :class:`Detection` (box in pixels,
a score in [0, 1], optional 5-point landmarks, and which view found the face). The models
ship inside registry packages, nothing is downloaded:

* ``haar`` (default; needs only opencv-python-headless 4.x, whose wheel ships the cascades,
  BSD/Intel licence): the frontal cascade, plus the profile cascade run on the image *and its
  mirror* so faces turned either way are found; the three sets are merged by non-maximum
  suppression. The view that found a face gives a coarse yaw (frontal / left / right profile).
* ``dlib`` (``pip install robustfer[dlib]``): dlib's HOG detector (Boost licence) and the
  5-point landmark model from ``face_recognition_models`` (the 5-point model is trained on
  dlib's own CC0-licensed 5-point landmark data; package under the MIT licence).
* ``yunet``: OpenCV's ``FaceDetectorYN`` with a YuNet ONNX file whose path the user supplies
  (``YuNetDetector("face_detection_yunet_2023mar.onnx")``); it gives 5 landmarks too.

Your own detector is any object with ``detect(image) -> list[Detection]`` (see
:class:`FaceDetector`); pass it as ``Recognizer(..., detector=obj)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from robustfer.data.landmarks import FIVE_POINTS
from robustfer.errors import ConfigError

#: Landmark order of every 5-point detector here: subject's right eye, left eye (image left
#: to right for a frontal face), nose tip, right mouth corner, left mouth corner.
LANDMARK_NAMES = FIVE_POINTS


@dataclass
class Detection:
    """One face found in an image.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the input image.
        score: detector confidence in [0, 1] (a ranking score, not a calibrated probability).
        landmarks: ``(5, 2)`` array in :data:`LANDMARK_NAMES` order (NaN rows for points the
            detector does not give, e.g. dlib's mouth corners), or None.
        view: which model found the face: ``"frontal"``, ``"profile_left"`` (the subject
            turned to their left, showing the right cheek), ``"profile_right"``, or
            ``"any"`` for detectors that do not say.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    view: str = "any"
    extra: dict = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@runtime_checkable
class FaceDetector(Protocol):
    """What the Recognizer needs from a detector."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a uint8 RGB ``(H, W, 3)`` image, best first."""
        ...


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(dets: list[Detection], iou_threshold: float = 0.3) -> list[Detection]:
    """Greedy non-maximum suppression; keeps the higher-scoring of overlapping boxes.

    A box mostly inside a kept one (over 60 % of its area) is dropped too: cascades often fire
    on a face and on a part of it.
    """
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        suppressed = False
        for k in kept:
            if iou(d.box, k.box) > iou_threshold:
                suppressed = True
                break
            ix = max(0.0, min(d.box[2], k.box[2]) - max(d.box[0], k.box[0]))
            iy = max(0.0, min(d.box[3], k.box[3]) - max(d.box[1], k.box[1]))
            if ix * iy > 0.6 * d.width * d.height:
                suppressed = True
                break
        if not suppressed:
            kept.append(d)
    return kept


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class HaarDetector:
    """Frontal + mirrored profile Haar cascades from opencv-python-headless 4.x.

    Large images are downscaled so that their longer side is at most ``max_side`` before
    detection (boxes are mapped back), which bounds the time per image; faces smaller than
    ``min_face`` of the shorter side of that working image (and than 20 px) are not searched
    for. The frontal pass runs on the histogram-equalised image.

    ``profile`` says when the two profile passes run: ``"auto"`` (default: only when the
    frontal pass finds no face, which keeps a one-face photo within the 60 ms pipeline budget
    on 2 cores; a face turned past what the frontal cascade covers is still found when it is
    alone, but one beside a detected frontal face is missed), ``"always"`` (turned faces are
    searched for in every image, at about three times the cost: ``create_detector("haar:always")``,
    ``--detector haar:always``), or ``"never"``. ``benchmarks/haar_settings.py`` measures both.

    The score of a face is ``1 - exp(-n / 10)`` where ``n`` is the number of raw windows the
    cascade merged into it (OpenCV's ``numDetections``): more agreeing windows, higher score.
    """

    name = "haar"

    def __init__(self, max_side: int = 320, min_face: float = 0.1, scale_factor: float = 1.2,
                 min_neighbors: int = 4, profile: str | bool = "auto", equalize: bool = True) -> None:
        import cv2

        if int(cv2.__version__.split(".")[0]) >= 5 or not hasattr(cv2, "data"):
            raise ConfigError(
                f"opencv {cv2.__version__} ships no Haar cascades; install a 4.x release: "
                "pip install 'opencv-python-headless<5'."
            )
        if profile is True or profile is False:
            profile = "always" if profile else "never"
        if profile not in ("always", "auto", "never"):
            raise ConfigError(f"HaarDetector profile={profile!r}: use 'always', 'auto' or 'never'.")
        root = Path(cv2.data.haarcascades)
        self._frontal = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_alt2.xml"))
        self._profile = cv2.CascadeClassifier(str(root / "haarcascade_profileface.xml"))
        if self._frontal.empty() or self._profile.empty():
            raise ConfigError(f"cannot load the Haar cascades from {root}; reinstall "
                              "opencv-python-headless 4.x.")
        self.max_side = max_side
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.profile = profile
        self.equalize = equalize

    def _run(self, cascade: object, gray: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
        rects, n = cascade.detectMultiScale2(  # type: ignore[attr-defined]
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size))
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        return rects, np.asarray(n, dtype=np.float64).reshape(-1)

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        gray = _gray(image)
        h, w = gray.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        if s < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        gh, gw = gray.shape[:2]
        min_size = max(20, int(self.min_face * min(gh, gw)))
        if min(gh, gw) < min_size:
            return []
        dets: list[Detection] = []

        def add(rects: np.ndarray, counts: np.ndarray, view: str, mirrored: bool) -> None:
            for (x, y, bw, bh), n in zip(rects, counts):
                if mirrored:
                    x = gw - x - bw
                box = (x / s, y / s, (x + bw) / s, (y + bh) / s)
                box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
                dets.append(Detection(box, float(1.0 - np.exp(-n / 10.0)), None, view))

        add(*self._run(self._frontal, cv2.equalizeHist(gray) if self.equalize else gray, min_size),
            "frontal", False)
        if self.profile == "always" or (self.profile == "auto" and not dets):
            # OpenCV's profile cascade finds faces turned to the image's left, i.e. a subject
            # turned to their right; the mirrored pass finds the other side.
            add(*self._run(self._profile, gray, min_size), "profile_right", False)
            add(*self._run(self._profile, np.ascontiguousarray(gray[:, ::-1]), min_size),
                "profile_left", True)
        return nms(dets)


class DlibDetector:
    """dlib's HOG face detector with the 5-point landmark model (``robustfer[dlib]``).

    ``upsample`` doubles the image that many times before detection (dlib finds faces of about
    80 px and up; one upsampling halves that).
    """

    name = "dlib"

    def __init__(self, upsample: int = 1, max_side: int = 640) -> None:
        import importlib.util

        try:
            import dlib
        except ImportError:
            raise ConfigError(
                "the dlib detector needs dlib and face_recognition_models: "
                "pip install 'robustfer[dlib]' (or use detector='haar')."
            ) from None
        # Located without importing face_recognition_models, whose __init__ needs the
        # pkg_resources module that recent setuptools no longer ships.
        spec = importlib.util.find_spec("face_recognition_models")
        model = (Path(next(iter(spec.submodule_search_locations))) / "models" /
                 "shape_predictor_5_face_landmarks.dat") if spec and spec.submodule_search_locations else None
        if model is None or not model.is_file():
            raise ConfigError("the dlib detector needs the 5-point landmark model from "
                              "face_recognition_models: pip install 'robustfer[dlib]'.")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(model))
        self.upsample = upsample
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        img = image if s == 1.0 else cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        img = np.ascontiguousarray(img)
        rects, scores, _ = self._detector.run(img, self.upsample, 0.0)
        dets = []
        for r, sc in zip(rects, scores):
            shape = self._shape(img, r)
            # dlib's 5-point order: right-eye outer, right-eye inner, left-eye outer,
            # left-eye inner (image left to right: 2, 3 | 1, 0), nose base.
            p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64) / s
            left_img_eye = (p[2] + p[3]) / 2  # subject's right eye, image left
            right_img_eye = (p[0] + p[1]) / 2
            # The 5-point model has no mouth corners: those rows are NaN, never made up.
            lm = np.stack([left_img_eye, right_img_eye, p[4], [np.nan, np.nan], [np.nan, np.nan]])
            box = (max(0.0, r.left() / s), max(0.0, r.top() / s), min(float(w), r.right() / s),
                   min(float(h), r.bottom() / s))
            score = float(1.0 / (1.0 + np.exp(-2.0 * sc)))
            dets.append(Detection(box, score, lm, "any", {"nose_point": "base"}))
        return nms(dets)


class YuNetDetector:
    """OpenCV's ``FaceDetectorYN`` (YuNet) with an ONNX model file you supply.

    YuNet's weights are not bundled with OpenCV's wheels; download
    ``face_detection_yunet_2023mar.onnx`` from the OpenCV model zoo (MIT licence) once and pass
    its path.
    """

    name = "yunet"

    def __init__(self, model_path: str | Path, score_threshold: float = 0.7, max_side: int = 640) -> None:
        import cv2

        p = Path(model_path)
        if not p.is_file():
            raise ConfigError(f"YuNet model {p} does not exist; pass the path of a "
                              "face_detection_yunet_*.onnx file.")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ConfigError(f"opencv {cv2.__version__} has no FaceDetectorYN; install opencv 4.8+.")
        self._det = cv2.FaceDetectorYN.create(str(p), "", (320, 320), score_threshold)
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        img = image if s == 1.0 else cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        self._det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self._det.detect(bgr)
        dets = []
        for f in faces if faces is not None else []:
            x, y, bw, bh = (float(v) / s for v in f[:4])
            lm = np.asarray(f[4:14], dtype=np.float64).reshape(5, 2) / s
            dets.append(Detection((max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh)),
                                  float(f[14]), lm, "any"))
        return nms(dets)


def _blazeface(**kwargs: object) -> FaceDetector:
    from robustfer.inference.blazeface import BlazeFaceDetector

    return BlazeFaceDetector(**kwargs)  # type: ignore[arg-type]


DETECTORS = {"blazeface": _blazeface, "haar": HaarDetector, "dlib": DlibDetector}
#: The detector used when none is named.
DEFAULT_DETECTOR = "blazeface"


def create_detector(name: str | FaceDetector = DEFAULT_DETECTOR, **kwargs: object) -> FaceDetector:
    """A detector by name (``"blazeface"``, the default; ``"haar"``, ``"dlib"``),
    ``haar:always|auto|never`` (the Haar profile mode), or ``yunet:PATH``; objects pass through."""
    if not isinstance(name, str):
        if not callable(getattr(name, "detect", None)):
            raise ConfigError(f"detector {name!r} has no detect(image) method; see robustfer.inference.FaceDetector.")
        return name
    if name.startswith("yunet:"):
        return YuNetDetector(name.split(":", 1)[1], **kwargs)  # type: ignore[arg-type]
    if name.startswith("blazeface:"):
        mode = name.split(":", 1)[1]
        levels = {"fast": 0, "default": 1, "thorough": 2}.get(mode)
        if levels is None:
            raise ConfigError(f"detector {name!r}: the BlazeFace mode must be fast, default or thorough "
                              "(e.g. 'blazeface:thorough').")
        return _blazeface(levels=levels, **kwargs)
    if name.startswith("haar:"):
        mode = name.split(":", 1)[1]
        if mode not in ("always", "auto", "never"):
            raise ConfigError(f"detector {name!r}: the Haar profile mode must be always, auto or never "
                              "(e.g. 'haar:always').")
        return HaarDetector(profile=mode, **kwargs)  # type: ignore[arg-type]
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}, "
                          "'blazeface:thorough', 'haar:always', or 'yunet:/path/to/face_detection_yunet.onnx'.")
    return DETECTORS[name](**kwargs)  # type: ignore[arg-type]
