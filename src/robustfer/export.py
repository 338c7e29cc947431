"""ONNX export of any robustfer checkpoint, and int8 quantisation of the exported file.

``robustfer export --checkpoint RUN/best.safetensors`` writes ``RUN/best.onnx``:
input ``input`` (N, C, S, S) float32 normalised as the checkpoint's preprocessing says, with a
dynamic batch dimension; outputs ``logits`` (N, K) and, for models with spatial attention,
``attention_maps``. The checkpoint's metadata (model, class names, preprocessing) is copied
into the ONNX file's ``metadata_props``, so the ``.onnx`` file alone is enough for
``Recognizer.from_checkpoint("best.onnx")``.

``robustfer export ... --int8 --calibration ferplus:train`` also writes ``RUN/best.int8.onnx``:
the same graph with int8 weights and activations (ONNX Runtime static quantisation, QDQ format,
per-channel 7-bit weights, safe on every x86 CPU: see :func:`quantize_onnx`), calibrated on
real face crops. It classifies two to three times faster than float32 at batch 64
(``benchmarks/inference_speed.py``); it is not bit-identical to float32, so measure its accuracy
(``robustfer evaluate --checkpoint best.int8.onnx``) before you ship it.

This module only writes files; running them is :mod:`robustfer.runtime.classifier`'s job.
Needs the training install, ``pip install 'robustfer[train]'`` (torch, onnx, onnxscript for
torch's exporter; onnxruntime comes with every install).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustfer.errors import CheckpointError, ConfigError, ModelError
from robustfer.runtime.checkpoint import atomic_write, load_model, read_meta
from robustfer.runtime.classifier import OnnxClassifier


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ONNX export needs {module}: pip install 'robustfer[train]'.") from None


class _Wrapped:
    """nn.Module returning plain tensors instead of ModelOutput (what exporters need)."""

    def __new__(cls, model: Any, with_attention: bool) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> Any:
                out = self.model(x)
                if with_attention:
                    return out.logits, out.attention_maps
                return out.logits

        return Wrapped().eval()


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, opset: int = 18,
                check: bool = True) -> Path:
    """Export a checkpoint to ONNX with a dynamic batch dimension; returns the file written.

    With ``check`` the exported model is run with ONNX Runtime on a random batch of 3 and
    compared with PyTorch (max abs difference of the logits <= 1e-4), and an error is raised
    otherwise.
    """
    import torch

    from robustfer.data.landmarks import takes_landmarks
    _require("onnx")
    _require("onnxscript")
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.safetensors"
    model, meta = load_model(checkpoint)
    pre = meta.preprocess
    x = torch.randn(2, pre.in_chans, pre.input_size, pre.input_size)
    try:
        with torch.no_grad():
            with_att = model(x).attention_maps is not None
    except ModelError as e:
        # e.g. RAN built with regions='landmarks': its crops need each face's landmarks
        raise ConfigError(f"{checkpoint} cannot be exported to ONNX: {meta.model_name} needs more than "
                          f"the image ({e}). The ONNX graph takes the face crop only; export a model "
                          "that crops from a fixed layout (RAN: regions='fixed'), or serve this one "
                          "with the PyTorch backend, which passes the detector's landmarks.") from None
    wrapped = _Wrapped(model, with_att)
    out = Path(out) if out else checkpoint.with_suffix(".onnx")
    names = ["logits", "attention_maps"] if with_att else ["logits"]
    batch = torch.export.Dim("batch", min=1, max=4096)

    def write(tmp: Path) -> None:
        prog = torch.onnx.export(wrapped, (x,), input_names=["input"], output_names=names,
                                 dynamic_shapes={"x": {0: batch}}, opset_version=opset,
                                 dynamo=True, verbose=False)
        prog.optimize()
        prog.save(str(tmp))
        import onnx

        m = onnx.load(str(tmp))
        md = read_meta(checkpoint).to_strings()
        for k, v in md.items():
            e = m.metadata_props.add()
            e.key, e.value = k, v
        onnx.save(m, str(tmp))

    atomic_write(out, write)
    if takes_landmarks(model) and getattr(model, "reads_landmarks", True):
        import warnings

        warnings.warn(f"{meta.model_name} can use landmarks, but the ONNX graph takes the face crop only: "
                      "it crops its regions from the fixed template, as on faces without landmarks. "
                      "The PyTorch backend passes the detector's landmarks.", stacklevel=2)
    if check:
        xb = torch.randn(3, pre.in_chans, pre.input_size, pre.input_size)
        with torch.no_grad():
            ref = model(xb).logits.numpy()
        got = OnnxClassifier(out).logits(xb.numpy())
        diff = float(np.abs(ref - got).max())
        if diff > 1e-4:
            raise CheckpointError(f"ONNX export of {checkpoint} differs from PyTorch by {diff:.2e} "
                                  "(> 1e-4); please report this with the model name.")
    return out


def calibration_crops(source: str, data_root: str | Path | None, preprocess: Any, n: int = 1024,
                      seed: int = 0) -> np.ndarray:
    """``n`` preprocessed face crops for int8 calibration, drawn at random (``seed``).

    ``source`` is a dataset spec (``ferplus:train``; calibrate on training images, never on a
    test split) or a folder of face-crop images (searched recursively).
    """
    from robustfer.data.preprocess import preprocess_face
    from robustfer.errors import DatasetError

    rng = np.random.default_rng(seed)
    folder = Path(source)
    if folder.is_dir():
        from robustfer.data.base import read_image
        from robustfer.data.folder import list_images

        files = list_images(folder)
        if not files:
            raise DatasetError(f"calibration folder {folder} holds no images; give a folder of face "
                               "crops or a dataset spec such as ferplus:train.")
        pick = rng.choice(len(files), min(n, len(files)), replace=False)
        return np.stack([preprocess_face(read_image(files[i]), preprocess) for i in pick]).astype(np.float32)
    from robustfer.data import build_dataset

    ds = build_dataset(source, root=data_root)
    if len(ds) == 0:
        raise DatasetError(f"calibration set {source} is empty.")
    pick = rng.choice(len(ds), min(n, len(ds)), replace=False)
    return np.stack([preprocess_face(ds[int(i)][0], preprocess) for i in pick]).astype(np.float32)


QUANT_METHODS = ("minmax", "entropy", "percentile")


def quantize_onnx(onnx_in: str | Path, calibration: np.ndarray, out: str | Path | None = None,
                  method: str = "minmax", batch_size: int = 64, reduce_range: bool = True) -> Path:
    """Static int8 quantisation of an exported model with ONNX Runtime (QDQ, per-channel weights).

    ``calibration`` is a float32 batch of preprocessed face crops (:func:`calibration_crops`)
    from which the activation ranges are set with ``method`` (``minmax``, ``entropy`` or
    ``percentile``). The robustfer metadata is kept, and a ``quantization`` entry says how the
    file was made. Returns the file written (default: ``NAME.int8.onnx`` beside ``onnx_in``).

    ``reduce_range`` (default) keeps the int8 weights in [-64, 64] (7 bits). x86 CPUs without
    VNNI (AVX2, AVX-512 without VNNI) multiply uint8 activations by int8 weights with
    ``vpmaddubsw``, which adds two products in saturating 16-bit arithmetic: with full-range
    weights the sum 2 x 255 x 127 overflows and the model silently loses accuracy (measured: 13
    points on FER2013Valid with the shipped model), with 7-bit weights it cannot (2 x 255 x 64 <
    32767), so the file gives the same outputs on every x86 CPU (docs/inference.md, int8).
    """
    _require("onnx")
    q = _require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in QUANT_METHODS:
        raise ConfigError(f"calibration method {method!r} is unknown; use one of {QUANT_METHODS}.")
    onnx_in = Path(onnx_in)
    out = Path(out) if out else onnx_in.with_suffix(".int8.onnx")
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ConfigError(f"calibration must be a non-empty (N, C, S, S) batch, got shape {calibration.shape}.")
    input_name = OnnxClassifier(onnx_in).input_name

    class Reader(q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.batches = iter([{input_name: calibration[i:i + batch_size]}
                                 for i in range(0, len(calibration), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    calib_method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                    "percentile": q.CalibrationMethod.Percentile}[method]

    def write(tmp: Path) -> None:
        import tempfile

        import onnx

        with tempfile.TemporaryDirectory() as d:
            pre = Path(d) / "pre.onnx"
            quant_pre_process(str(onnx_in), str(pre))
            q.quantize_static(str(pre), str(tmp), Reader(), quant_format=q.QuantFormat.QDQ,
                              per_channel=True, reduce_range=reduce_range,
                              activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              calibrate_method=calib_method)
        m = onnx.load(str(tmp))
        kept = {e.key: e.value for e in m.metadata_props}
        del m.metadata_props[:]
        bits = "7-bit (reduce_range) " if reduce_range else ""
        kept["quantization"] = (f"int8 static, QDQ, per-channel {bits}weights, uint8 activations, {method} "
                                f"calibration on {len(calibration)} face crops (onnxruntime)")
        for k, v in kept.items():
            e = m.metadata_props.add()
            e.key, e.value = k, v
        onnx.save(m, str(tmp))

    atomic_write(out, write)
    return out
