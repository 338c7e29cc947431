"""The application-facing API: faces in, boxes + head pose + expression probabilities out.

>>> from robustfer import Recognizer
>>> rec = Recognizer.from_pretrained("default")          # the model shipped in the package
>>> faces = rec.predict("photo.jpg")                       # list[FaceResult], best face first
>>> faces[0].expression, faces[0].probabilities["happiness"], faces[0].pose.yaw_bin_name

* ``predict(x)`` takes a path, bytes, a numpy array (RGB; ``bgr=True`` for OpenCV arrays), a
  PIL image, or a list of them. One input gives ``list[FaceResult]``; a list gives one such
  list per input. A photo without a detectable face gives an empty list, never a made-up face.
* ``predict(x, detect=False)`` treats each whole image as one face crop (dataset images, crops
  from another detector) and applies the model's own preprocessing.
* ``predict_batch(inputs)`` never raises for a bad input: each :class:`ImageResult` carries
  either the faces or the error message (what the CLI and the web service use).

All face crops of a call are classified together in batches of ``batch_size``. The crop
geometry and normalisation come from the checkpoint's :class:`Preprocess`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustfer.data.preprocess import Preprocess, preprocess_face
from robustfer.errors import ConfigError, RobustferError
from robustfer.inference.align import align_face, crop_points
from robustfer.inference.detect import DEFAULT_DETECTOR, Detection, FaceDetector, create_detector
from robustfer.inference.io import MAX_IMAGE_PIXELS, ImageInput, load_image
from robustfer.inference.pose import HeadPose, estimate_pose
from robustfer.runtime.classifier import TorchClassifier, load_classifier
from robustfer.runtime.weights import PRETRAINED, pretrained_path

__all__ = ["FaceResult", "ImageResult", "PRETRAINED", "Recognizer", "pretrained_path", "to_dataframe",
           "to_json", "to_records"]


@dataclass
class FaceResult:
    """One face and what robustfer read from it.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the input image (the whole image when
            ``detect=False``).
        score: detection score in [0, 1] (1.0 when ``detect=False``).
        probabilities: expression name -> probability, in the model's class order.
        expression: the most probable expression.
        confidence: its probability.
        pose: head pose (:class:`~robustfer.inference.pose.HeadPose`).
        landmarks: ``(5, 2)`` points when the detector gives them, else None.
        crop: ``"mesh"`` (fitted to the face mesh), ``"aligned"`` (to the eyes), ``"box"`` or
            ``"whole-image"``: how the face crop was made.
        attention: a spatial attention map ``(h, w)`` in [0, 1] over the face crop, when the
            model has one and ``attention=True`` was asked for.
        track_id: the face's track in a video (:meth:`Recognizer.track`), else None.
        raw_probabilities: this frame's own probabilities when a tracker smooths
            ``probabilities`` over frames, else None.
        mesh: the ``(468, 3)`` face mesh (image pixels; z = relative depth) from the default
            detector, else None (not in the JSON output).
    """

    box: tuple[float, float, float, float]
    score: float
    probabilities: dict[str, float]
    expression: str
    confidence: float
    pose: HeadPose
    landmarks: np.ndarray | None = None
    crop: str = "box"
    attention: np.ndarray | None = field(default=None, repr=False)
    track_id: int | None = None
    raw_probabilities: dict[str, float] | None = field(default=None, repr=False)
    mesh: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (attention maps and the mesh are left out: see :attr:`attention`)."""
        d: dict[str, Any] = {} if self.track_id is None else {"track_id": self.track_id}
        d.update({
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "expression": self.expression,
            "confidence": round(float(self.confidence), 4),
            "probabilities": {k: round(float(v), 4) for k, v in self.probabilities.items()},
            "pose": self.pose.to_dict(),
            "landmarks": None if self.landmarks is None else [
                [round(float(v), 1) if np.isfinite(v) else None for v in pt] for pt in self.landmarks],
            "crop": self.crop,
        })
        if self.raw_probabilities is not None:
            d["raw_probabilities"] = {k: round(float(v), 4) for k, v in self.raw_probabilities.items()}
        return d


@dataclass
class ImageResult:
    """Faces of one input of :meth:`Recognizer.predict_batch`, or why it failed."""

    source: str
    faces: list[FaceResult]
    error: str | None = None
    width: int | None = None
    height: int | None = None
    frame: int | None = None
    time_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "width": self.width, "height": self.height}
        if self.frame is not None:
            d["frame"] = self.frame
            d["time_s"] = None if self.time_s is None or self.time_s != self.time_s else round(self.time_s, 3)
        d["faces"] = [f.to_dict() for f in self.faces]
        d["error"] = self.error
        return d


def to_records(results: Sequence[ImageResult]) -> list[dict[str, Any]]:
    """One flat row per face (or per failed/faceless input): for CSV files and data frames."""
    rows: list[dict[str, Any]] = []
    for r in results:
        base: dict[str, Any] = {"source": r.source}
        if r.frame is not None:
            base["frame"] = r.frame
            base["time_s"] = r.time_s
        if not r.faces:
            rows.append({**base, "face": None, "error": r.error})
            continue
        for i, f in enumerate(r.faces):
            row = {**base, "face": i, "track": f.track_id, "x1": f.box[0], "y1": f.box[1], "x2": f.box[2], "y2": f.box[3],
                   "score": f.score, "expression": f.expression, "confidence": f.confidence,
                   "yaw": f.pose.yaw, "pitch": f.pose.pitch, "roll": f.pose.roll,
                   "yaw_bin": f.pose.yaw_bin_name, "crop": f.crop}
            row.update({f"p_{k}": v for k, v in f.probabilities.items()})
            row["error"] = None
            rows.append(row)
    return rows


def to_dataframe(results: Sequence[ImageResult] | Sequence[FaceResult]) -> Any:
    """A pandas DataFrame with one row per face (needs ``pip install pandas``)."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("to_dataframe needs pandas: pip install pandas "
                          "(or use to_records() for plain dicts).") from None
    items = list(results)
    if items and isinstance(items[0], FaceResult):
        items = [ImageResult("input", list(items))]  # type: ignore[arg-type]
    return pd.DataFrame(to_records(items))  # type: ignore[arg-type]


def to_json(results: Sequence[ImageResult]) -> str:
    return json.dumps([r.to_dict() for r in results])


class Recognizer:
    """Detect faces, estimate head pose, classify expressions.

    Args:
        model: a robustfer model (``nn.Module`` returning :class:`ModelOutput`), or None with
            ``classifier`` given.
        preprocess: the model's preprocessing (from its checkpoint).
        class_names: expression names in the model's output order.
        detector: ``"blazeface"`` (default: BlazeFace + face mesh, landmarks and 3-D head pose),
            ``"blazeface:thorough"`` (small faces), ``"haar"``, ``"dlib"``, ``"yunet:PATH"`` or your own object with
            ``detect(rgb) -> list[Detection]``; built lazily, so ``detect=False`` needs none.
        batch_size: face crops per forward pass.
        max_faces: keep at most this many faces per image (highest detection score first).
        min_score: drop detections scoring below this.
    """

    def __init__(self, model: Any = None, preprocess: Preprocess | None = None,
                 class_names: Sequence[str] = (), detector: str | FaceDetector = DEFAULT_DETECTOR,
                 batch_size: int = 64, classifier: Any = None, max_faces: int = 50,
                 min_score: float = 0.0, use_landmarks: bool = True,
                 max_pixels: int = MAX_IMAGE_PIXELS, device: str = "cpu") -> None:
        if preprocess is None or not class_names:
            raise ConfigError("Recognizer needs the model's preprocess and class names; use "
                              "Recognizer.from_pretrained('default') or from_checkpoint(path).")
        if classifier is None:
            if model is None:
                raise ConfigError("Recognizer needs a model or a classifier.")
            classifier = TorchClassifier(model, device)
        self.classifier = classifier
        self.preprocess = preprocess
        self.class_names = tuple(class_names)
        self._detector_spec = detector
        self._detector: FaceDetector | None = None
        self.batch_size = batch_size
        self.max_faces = max_faces
        self.min_score = min_score
        self.use_landmarks = use_landmarks
        self.max_pixels = max_pixels
        self.source: str = "model"
        self.model_name: str = type(model).__name__ if model is not None else ""  # registry name once loaded

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, name: str = "default", **kwargs: Any) -> Recognizer:
        """A model shipped in the package (``"default"``), or a checkpoint path."""
        p = Path(name)
        if name not in PRETRAINED and (p.suffix in (".safetensors", ".onnx") or p.exists()):
            return cls.from_checkpoint(p, **kwargs)
        return cls.from_checkpoint(pretrained_path(name), **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, backend: str = "auto", onnx_path: str | Path | None = None,
                        threads: int | None = None, check_int8: bool = True, **kwargs: Any) -> Recognizer:
        """A model from a ``best.safetensors`` (or a run folder, or an exported ``.onnx``).

        Args:
            path: the checkpoint.
            backend: ``"auto"`` (PyTorch when installed, else ONNX Runtime on the ``.onnx`` next
                to the checkpoint), ``"torch"``, ``"onnx"`` (``onnx_path``, default the ``.onnx``
                next to the checkpoint) or ``"onnx-int8"`` (the ``.int8.onnx`` next to it, made by
                ``robustfer export --int8``; checked against float32 on this CPU when first
                opened, float32 is used with a warning if they disagree).
            onnx_path: the ONNX file for the ONNX backends.
            threads: CPU threads of the classifier.
            check_int8: run that int8 check.
            **kwargs: :class:`Recognizer` options (``detector``, ``device``, ...).
        """
        clf, meta = load_classifier(path, backend, onnx_path, threads, kwargs.pop("device", "cpu"),
                                    check_int8_model=check_int8)
        rec = cls(None, meta.preprocess, meta.class_names, classifier=clf, **kwargs)
        rec.source = str(path)
        rec.model_name = meta.model_name
        return rec

    def clone(self, detector: str | FaceDetector | None = None, **options: Any) -> Recognizer:
        """A recognizer that shares this one's classifier but builds its own detector.

        For threads: ONNX Runtime sessions and PyTorch modules in inference mode may be called
        from several threads at once, OpenCV's cascade classifier is not documented as safe to,
        so a service gives each worker thread its own clone (the web service does).

        Args:
            detector: the clone's detector spec (default: this one's).
            **options: other attributes to change, e.g. ``max_pixels``.
        """
        other = copy.copy(self)
        other._detector_spec = self._detector_spec if detector is None else detector
        other._detector = None
        for k, v in options.items():
            if not hasattr(self, k):
                raise ConfigError(f"Recognizer.clone: unknown option {k!r}; use batch_size, max_faces, "
                                  "min_score, use_landmarks or max_pixels.")
            setattr(other, k, v)
        return other

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = create_detector(self._detector_spec)
        return self._detector

    # ----------------------------------------------------------------------------- pieces
    def face_tensor(self, crop: np.ndarray) -> np.ndarray:
        """uint8 RGB crop -> normalised float32 (C, S, S): the evaluation transform itself."""
        return preprocess_face(crop, self.preprocess)

    def detect(self, image: np.ndarray) -> list[Detection]:
        dets = [d for d in self.detector.detect(image) if d.score >= self.min_score]
        dets.sort(key=lambda d: -d.score)
        return dets[: self.max_faces]

    def _points(self, faces: list[tuple[Detection, np.ndarray, str]]) -> list[np.ndarray | None]:
        """Each face's landmarks in its crop, for models that take landmarks (RAN with
        ``regions="landmarks"``, AHA); ``None`` where the detector gave none."""
        pre = self.preprocess
        if not getattr(self.classifier, "takes_landmarks", False):
            return [None] * len(faces)
        return [None if how == "whole-image" else
                crop_points(det, pre.input_size, pre.crop_scale, pre.crop_shift, self.use_landmarks)
                for det, _, how in faces]

    def _crops(self, image: np.ndarray, detect: bool) -> list[tuple[Detection, np.ndarray, str]]:
        pre = self.preprocess
        if not detect:
            h, w = image.shape[:2]
            det = Detection((0.0, 0.0, float(w), float(h)), 1.0, None, "any")
            return [(det, image, "whole-image")]
        out = []
        for det in self.detect(image):
            crop, how = align_face(image, det, pre.input_size, pre.crop_scale, pre.crop_shift,
                                   self.use_landmarks)
            out.append((det, crop, how))
        return out

    def _classify(self, tensors: list[np.ndarray], attention: bool,
                  points: list[np.ndarray | None] | None = None) -> tuple[np.ndarray, list[np.ndarray | None]]:
        if not tensors:
            return np.zeros((0, len(self.class_names)), np.float32), []
        probs, atts = [], []
        for i in range(0, len(tensors), self.batch_size):
            kw = {}
            pts = (points or [])[i:i + self.batch_size]
            # a batch gets landmarks only when every face in it has the same number of them
            if pts and all(q is not None for q in pts) and len({len(q) for q in pts}) == 1:
                kw["landmarks"] = np.stack(pts)
            p, a = self.classifier(np.stack(tensors[i:i + self.batch_size]), attention=attention, **kw)
            probs.append(p)
            atts.extend(list(a) if a is not None else [None] * len(p))
        return np.concatenate(probs), atts

    # ----------------------------------------------------------------------------- predict
    def _analyse(self, images: list[np.ndarray], detect: bool, attention: bool) -> list[list[FaceResult]]:
        per_image = [self._crops(im, detect) for im in images]
        flat = [self.face_tensor(c) for faces in per_image for (_, c, _) in faces]
        points = self._points([f for faces in per_image for f in faces])
        probs, atts = self._classify(flat, attention, points)
        results: list[list[FaceResult]] = []
        k = 0
        for faces in per_image:
            res = []
            for det, _, how in faces:
                p = probs[k]
                top = int(np.argmax(p))
                pose = estimate_pose(det) if detect else HeadPose(None, None, None, None, None, "none")
                res.append(FaceResult(
                    box=tuple(float(v) for v in det.box), score=float(det.score),
                    probabilities={n: float(v) for n, v in zip(self.class_names, p)},
                    expression=self.class_names[top], confidence=float(p[top]), pose=pose,
                    landmarks=det.landmarks, crop=how, attention=atts[k], mesh=det.extra.get("mesh")))
                k += 1
            results.append(res)
        return results

    def predict(self, inputs: ImageInput | Sequence[ImageInput], detect: bool = True,
                bgr: bool = False, attention: bool = False) -> list[FaceResult] | list[list[FaceResult]]:
        """Faces with pose and expression probabilities.

        Args:
            inputs: one image (path, bytes, RGB array, PIL image) or a list of them.
            detect: find faces first; ``False`` treats each image as one face crop.
            bgr: arrays are in OpenCV's BGR channel order.
            attention: also return the model's spatial attention map per face, if it has one.

        Returns:
            ``list[FaceResult]`` for one image (empty when no face is found), or one such list
            per image for a list.

        Raises:
            ImageError: an input cannot be read (the message names it); see
                :meth:`predict_batch` for a version that reports errors per input instead.
        """
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        images = []
        for i, x in enumerate(items):
            try:
                images.append(load_image(x, bgr=bgr, max_pixels=self.max_pixels))
            except RobustferError as e:
                if single:
                    raise
                raise type(e)(f"input {i}: {e}") from None
        out = self._analyse(images, detect, attention)
        return out[0] if single else out

    def predict_batch(self, inputs: Sequence[ImageInput], detect: bool = True, bgr: bool = False,
                      attention: bool = False, names: Sequence[str] | None = None) -> list[ImageResult]:
        """Like :meth:`predict` for a list, but a bad input gives an :class:`ImageResult`
        with ``error`` set instead of stopping the batch."""
        names = list(names) if names is not None else [
            str(x) if isinstance(x, (str, Path)) else f"input {i}" for i, x in enumerate(inputs)]
        loaded: list[tuple[int, np.ndarray]] = []
        results: list[ImageResult] = []
        for i, x in enumerate(inputs):
            try:
                im = load_image(x, bgr=bgr, max_pixels=self.max_pixels)
                loaded.append((i, im))
                results.append(ImageResult(names[i], [], None, im.shape[1], im.shape[0]))
            except RobustferError as e:
                results.append(ImageResult(names[i], [], str(e)))
        if loaded:
            faces = self._analyse([im for _, im in loaded], detect, attention)
            for (i, _), f in zip(loaded, faces):
                results[i].faces = f
        return results

    def track(self, frames: Iterable[Any], tracker: Any = None, smoothing: float = 0.0,
              bgr: bool = False, detect: bool = True) -> Iterator[ImageResult]:
        """Faces of consecutive video frames, each with a stable ``track_id``.

        Args:
            frames: an iterable of images (arrays, paths, ...) or of
                :class:`~robustfer.inference.io.Frame` (from :func:`iter_video` /
                :func:`open_stream`, which carry their frame index and time).
            tracker: a :class:`~robustfer.inference.track.FaceTracker` to use (keep it to read
                :meth:`~robustfer.inference.track.FaceTracker.summaries` afterwards); by
                default a new one with ``smoothing``.
            smoothing: EMA factor for each track's probabilities (0 = raw; e.g. 0.6).
            bgr: arrays are in OpenCV's BGR order.

        Yields:
            one :class:`ImageResult` per frame (``frame`` set; ``error`` set for a frame that
            cannot be read, and the video goes on).
        """
        from robustfer.inference.io import Frame
        from robustfer.inference.track import FaceTracker

        tracker = tracker if tracker is not None else FaceTracker(smoothing=smoothing)
        for i, fr in enumerate(frames):
            index, t = (fr.index, fr.time_s) if isinstance(fr, Frame) else (i, None)
            x = fr.image if isinstance(fr, Frame) else fr
            name = getattr(fr, "source", None) or "frame"
            try:
                image = load_image(x, bgr=bgr, max_pixels=self.max_pixels)
            except RobustferError as e:
                yield ImageResult(name, [], str(e), frame=index, time_s=t)
                continue
            faces = self._analyse([image], detect, False)[0]
            tracker.update(faces, index, image, t)
            yield ImageResult(name, faces, None, image.shape[1], image.shape[0], frame=index, time_s=t)

    def __repr__(self) -> str:
        pre = self.preprocess
        return (f"Recognizer({self.source}, classes={list(self.class_names)}, "
                f"input={pre.input_size}px x{pre.in_chans}, detector={self._detector_spec!r})")
