"""ONNX export of any robustfer checkpoint, and an ONNX Runtime classifier for the Recognizer.

``robustfer export --checkpoint RUN/best.safetensors --format onnx`` writes ``RUN/best.onnx``:
input ``input`` (N, C, S, S) float32 normalised as the checkpoint's preprocessing says, with a
dynamic batch dimension; outputs ``logits`` (N, K) and, for models with spatial attention,
``attention_maps``. The checkpoint's metadata (model, class names, preprocessing) is copied
into the ONNX file's ``metadata_props``, so the ``.onnx`` file alone is enough for
``Recognizer.from_checkpoint("best.onnx")``.

Needs ``pip install robustfer[onnx]`` (onnx, onnxscript for torch's exporter, onnxruntime).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustfer.errors import CheckpointError, ConfigError


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ONNX support needs {module}: pip install 'robustfer[onnx]'.") from None


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

    from robustfer.engine.checkpoint import atomic_write, load_model, read_meta

    _require("onnx")
    _require("onnxscript")
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.safetensors"
    model, meta = load_model(checkpoint)
    pre = meta.preprocess
    x = torch.randn(2, pre.in_chans, pre.input_size, pre.input_size)
    with torch.no_grad():
        with_att = model(x).attention_maps is not None
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


class OnnxClassifier:
    """Runs an exported model with ONNX Runtime: float32 NCHW -> (probabilities, attention)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"ONNX model {path} does not exist; create it with "
                              "`robustfer export --checkpoint CKPT --format onnx`.")
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
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __call__(self, x: np.ndarray, attention: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        want = ["logits"] + (["attention_maps"] if attention and "attention_maps" in self.output_names else [])
        outs = self.session.run(want, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        z = outs[0] - outs[0].max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        att = None
        if len(outs) > 1:
            a = outs[1].mean(1)
            a = a - a.reshape(len(a), -1).min(1)[:, None, None]
            att = a / np.maximum(a.reshape(len(a), -1).max(1), 1e-12)[:, None, None]
        return p, att


def meta_from_onnx(path: str | Path) -> Any:
    """The :class:`CheckpointMeta` stored in an exported ONNX file."""
    from robustfer.engine.checkpoint import CheckpointMeta

    md = OnnxClassifier(path).metadata()
    return CheckpointMeta.from_strings(md, Path(path))

