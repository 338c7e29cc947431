"""One classifier interface, two backends: PyTorch and ONNX Runtime (float32 or int8).

A classifier takes a float32 NCHW batch of preprocessed face crops and returns
``(probabilities (N, K), attention maps (N, h, w) in [0, 1] or None)``. Both backends share
:func:`softmax` and :func:`normalize_attention`, so they agree to float rounding.

* :class:`TorchClassifier` runs a robustfer ``nn.Module`` (needs PyTorch; passes landmarks to
  models that take them).
* :class:`OnnxClassifier` runs an exported ``.onnx`` file (``robustfer export``), float32 or
  int8, with ONNX Runtime; no PyTorch needed.
* :func:`load_classifier` opens a checkpoint with the backend asked for; ``backend="auto"``
  uses PyTorch when it is installed and ONNX Runtime otherwise (the light install).

**int8 guard.** Integer kernels differ between CPUs (on x86 without VNNI, ONNX Runtime's
u8 x s8 kernels add pairs of products in saturating 16-bit arithmetic, which a model quantised
for VNNI can overflow). So the first time an int8 file is opened in a process,
:func:`check_int8` compares it with its float32 sibling on built-in reference faces (rendered
synthetic faces, no data needed) on *this* CPU; when they disagree it warns and the float32
file is used instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robustfer.errors import ConfigError

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


class Classifier(Protocol):
    """What the Recognizer calls: preprocessed crops -> (probabilities, attention or None)."""

    takes_landmarks: bool

    def __call__(self, x: np.ndarray, attention: bool = False,
                 landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (max-subtracted)."""
    z = np.asarray(logits, np.float32)
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def normalize_attention(maps: np.ndarray) -> np.ndarray:
    """(N, A, h, w) attention maps -> their mean over A, min-max scaled to [0, 1] per face."""
    a = np.asarray(maps, np.float32).mean(1)
    flat = a.reshape(len(a), -1)
    a = a - flat.min(1)[:, None, None]
    return a / np.maximum(a.reshape(len(a), -1).max(1), 1e-12)[:, None, None]


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs {module}: pip install {module}.") from None


def torch_available() -> bool:
    """Whether PyTorch imports (the full install). Only called where torch would be used next."""
    try:
        import torch  # noqa: F401
    except (ImportError, OSError):  # absent, or a broken build whose libraries fail to load
        return False
    return True


class TorchClassifier:
    """Runs a robustfer model with PyTorch: float32 NCHW batch -> (probs, attention or None)."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        import torch

        from robustfer.data.landmarks import takes_landmarks

        self.torch = torch
        self.device = torch.device(device)
        # channels-last: same fp32 arithmetic, about 1.4x faster convolutions on CPU here
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.takes_landmarks = takes_landmarks(model)  # once, not per batch
        self.temperature = 1.0  # probabilities = softmax(logits / T); set from the checkpoint

    def logits(self, x: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits (N, K) and attention maps (N, A, h, w) or None."""
        torch = self.torch
        with torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
            xt = xt.contiguous(memory_format=torch.channels_last)
            kw = {}
            if landmarks is not None and self.takes_landmarks:
                kw["landmarks"] = torch.from_numpy(np.asarray(landmarks, np.float32)).to(self.device)
            out = self.model(xt, **kw)
            maps = None if out.attention_maps is None else out.attention_maps.float().cpu().numpy()
            return out.logits.float().cpu().numpy(), maps

    def __call__(self, x: np.ndarray, attention: bool = False,
                 landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        logits, maps = self.logits(x, landmarks)
        return (softmax(logits / self.temperature),
                normalize_attention(maps) if attention and maps is not None else None)


class OnnxClassifier:
    """Runs an exported model with ONNX Runtime: float32 NCHW -> (probabilities, attention).

    Args:
        path: an ``.onnx`` file written by ``robustfer export`` (float32 or int8).
        threads: intra-op threads (default: ONNX Runtime's choice).
    """

    takes_landmarks = False  # the graph takes the face crop only
    temperature = 1.0  # probabilities = softmax(logits / T); set from the model's metadata

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = _require("onnxruntime", "the ONNX backend")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"ONNX model {path} does not exist; create it with "
                              "`robustfer export --checkpoint CKPT`.")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        # No busy-waiting between runs: spinning threads would steal the cores from the face
        # detector running between two classifications.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types
            raise ConfigError(f"{path} is not a loadable ONNX model ({e}).") from None
        self.path = path
        self.threads = threads
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def metadata(self) -> dict[str, str]:
        """The robustfer metadata stored in the file (model, class names, preprocessing)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __call__(self, x: np.ndarray, attention: bool = False,
                 landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        want = ["logits"] + (["attention_maps"] if attention and "attention_maps" in self.output_names else [])
        outs = self.session.run(want, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return softmax(outs[0] / self.temperature), (normalize_attention(outs[1]) if len(outs) > 1 else None)


def meta_from_onnx(path: str | Path) -> Any:
    """The :class:`~robustfer.runtime.checkpoint.CheckpointMeta` stored in an exported ONNX file."""
    from robustfer.runtime.checkpoint import CheckpointMeta

    return CheckpointMeta.from_strings(OnnxClassifier(path).metadata(), Path(path))


# ------------------------------------------------------------------------------- int8 guard
#: Reference faces for the int8 check and how close int8 must stay to float32 on them.
GUARD_FACES = 64
GUARD_MIN_AGREEMENT = 0.9      # share of faces with the same top expression
GUARD_MAX_MEAN_ABS_DIFF = 0.05  # mean |p_int8 - p_float32| over faces and classes

_GUARD_CACHE: dict[tuple[str, str, int], dict[str, Any]] = {}


def reference_faces(preprocess: Any, n: int = GUARD_FACES, seed: int = 0) -> np.ndarray:
    """``n`` rendered synthetic faces (all expressions, varied pose), preprocessed: (n, C, S, S)."""
    from robustfer.data.preprocess import preprocess_face
    from robustfer.data.synthetic import render_face

    rng = np.random.default_rng(seed)
    crops = [render_face(i % 7, rng, size=max(48, preprocess.input_size))[0] for i in range(n)]
    return np.stack([preprocess_face(c, preprocess) for c in crops]).astype(np.float32)


def float_sibling(int8_path: str | Path) -> Path:
    """``NAME.int8.onnx`` -> ``NAME.onnx``."""
    p = Path(int8_path)
    name = p.name[: -len(".int8.onnx")] if p.name.endswith(".int8.onnx") else p.stem
    return p.with_name(name + ".onnx")


def int8_agreement(int8: OnnxClassifier, ref: OnnxClassifier, x: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean absolute probability difference of two classifiers on ``x``."""
    p8, _ = int8(x)
    p32, _ = ref(x)
    return {"agreement": float((p8.argmax(1) == p32.argmax(1)).mean()),
            "mean_abs_diff": float(np.abs(p8 - p32).mean()),
            "max_abs_diff": float(np.abs(p8 - p32).max())}


def check_int8(int8: OnnxClassifier, preprocess: Any, reference: str | Path | None = None) -> dict[str, Any]:
    """Compare an int8 model with its float32 sibling on reference faces, on this CPU.

    Returns ``{"ok": bool, "agreement", "mean_abs_diff", "max_abs_diff", "reference"}``; ``ok``
    is None when there is no float32 file to compare with. Cached per file for the process.
    """
    ref_path = Path(reference) if reference else float_sibling(int8.path)
    key = (str(Path(int8.path).resolve()), str(ref_path), Path(int8.path).stat().st_mtime_ns)
    if key in _GUARD_CACHE:
        return _GUARD_CACHE[key]
    if not ref_path.is_file():
        res: dict[str, Any] = {"ok": None, "reference": str(ref_path)}
    else:
        stats = int8_agreement(int8, OnnxClassifier(ref_path, threads=int8.threads),
                               reference_faces(preprocess))
        ok = (stats["agreement"] >= GUARD_MIN_AGREEMENT
              and stats["mean_abs_diff"] <= GUARD_MAX_MEAN_ABS_DIFF)
        res = {"ok": ok, "reference": str(ref_path), **stats}
    _GUARD_CACHE[key] = res
    return res


def guarded_int8(path: str | Path, preprocess: Any, threads: int | None = None,
                 check: bool = True, opened: OnnxClassifier | None = None) -> OnnxClassifier:
    """Open an int8 ONNX file (or take it ``opened``); with ``check``, fall back to float32 (with
    a warning) when it disagrees with its float32 sibling on this CPU (:func:`check_int8`)."""
    clf = opened if opened is not None else OnnxClassifier(path, threads=threads)
    if not check:
        return clf
    res = check_int8(clf, preprocess)
    if res["ok"] is None:
        warnings.warn(f"int8 model {path} cannot be checked on this CPU: no float32 {res['reference']} "
                      "beside it. Measure it with `robustfer evaluate --checkpoint FILE`.", stacklevel=3)
        return clf
    if not res["ok"]:
        warnings.warn(
            f"int8 model {path} disagrees with its float32 model on this CPU (same top expression on "
            f"{100 * res['agreement']:.0f} % of {GUARD_FACES} reference faces, mean |dp| "
            f"{res['mean_abs_diff']:.3f}); using the float32 model {res['reference']} instead. Re-quantise "
            "it with `robustfer export --checkpoint FILE.onnx --int8` (reduce-range weights are safe on "
            "every x86 CPU).", RuntimeWarning, stacklevel=3)
        return OnnxClassifier(res["reference"], threads=threads)
    return clf


def load_classifier(path: str | Path, backend: str = "auto", onnx_path: str | Path | None = None,
                    threads: int | None = None, device: str = "cpu",
                    check_int8_model: bool = True) -> tuple[Any, Any]:
    """Open a checkpoint for inference; returns ``(classifier, CheckpointMeta)``.

    Args:
        path: a ``best.safetensors`` (or a run folder holding one), or an ``.onnx`` file (its
            metadata travels inside it).
        backend: ``"torch"``; ``"onnx"`` (the ``.onnx`` next to the checkpoint, or
            ``onnx_path``); ``"onnx-int8"`` (the ``.int8.onnx`` next to it, checked against
            float32 on this CPU, see :func:`guarded_int8`); ``"auto"``: PyTorch when it is
            installed, else ONNX.
        threads: CPU threads for the backend.
        device: PyTorch device.
        check_int8_model: run the int8 guard.
    """
    from robustfer.runtime.checkpoint import CheckpointMeta, load_model, read_meta

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if path.suffix == ".onnx":
        onnx_path = path
        if backend in ("auto", "torch"):
            backend = "onnx-int8" if path.name.endswith(".int8.onnx") else "onnx"
    if backend == "auto":
        backend = "torch" if torch_available() else "onnx"
        if backend == "onnx" and onnx_path is None and not path.with_suffix(".onnx").is_file():
            raise ConfigError(f"{path} needs PyTorch (pip install torch), or an ONNX export beside it "
                              f"({path.with_suffix('.onnx').name}, made by `robustfer export`) for the "
                              "light install.")
    if backend == "torch":
        if not torch_available():
            raise ConfigError("backend 'torch' needs PyTorch: pip install 'robustfer[train]' (on a "
                              "CPU-only machine install the CPU build of torch first), or use backend 'onnx'.")
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        model, meta = load_model(path, device)
        clf = TorchClassifier(model, device)
        clf.temperature = meta.temperature
        return clf, meta
    if onnx_path is None:
        onnx_path = path.with_suffix(".onnx" if backend == "onnx" else ".int8.onnx")
        if not onnx_path.is_file():
            how = " --int8 --calibration ferplus:train" if backend == "onnx-int8" else ""
            raise ConfigError(f"no {'int8 ' if backend == 'onnx-int8' else ''}ONNX model {onnx_path}; "
                              f"make it with `robustfer export --checkpoint {path}{how}`.")
    onnx_path = Path(onnx_path)
    clf: Any = OnnxClassifier(onnx_path, threads=threads)
    # the .onnx alone carries the metadata; beside a checkpoint, the checkpoint's is used
    meta = CheckpointMeta.from_strings(clf.metadata(), onnx_path) if onnx_path == path else read_meta(path)
    if backend == "onnx-int8":
        clf = guarded_int8(onnx_path, meta.preprocess, threads, check=check_int8_model, opened=clf)
    clf.temperature = meta.temperature
    return clf, meta
