"""Model checkpoints that reload alone, written atomically.

A model checkpoint (``best.safetensors``) holds the weights in safetensors format and, in its
metadata, the model name and options, class names in order, the :class:`Preprocess`, the
resolved training config and the selection metric. :func:`load_model` rebuilds the model from
this file alone (needs PyTorch); :func:`read_meta` reads only the metadata (no PyTorch), which
is what the ONNX backend needs. The training state (``last.pt``) is the engine's business:
:mod:`robustfer.engine.checkpoint`.

Files are written to a temporary file in the same folder and renamed over the target
(``os.replace`` is atomic on POSIX), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustfer._version import __version__
from robustfer.data.preprocess import Preprocess
from robustfer.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "robustfer-checkpoint-v1"


@dataclass
class CheckpointMeta:
    """What a model checkpoint records besides the weights."""

    model_name: str
    model_options: dict[str, Any]
    class_names: tuple[str, ...]
    preprocess: Preprocess
    config: dict[str, Any]
    epoch: int
    metrics: dict[str, Any]
    version: str = __version__
    #: Temperature scaling (Guo et al., ICML 2017): probabilities are softmax(logits / T);
    #: fitted on a validation split (``robustfer calibrate``); 1.0 = not calibrated.
    temperature: float = 1.0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_strings(self) -> dict[str, str]:
        """safetensors metadata must be str -> str."""
        return {
            "format": FORMAT,
            "robustfer_version": self.version,
            "model_name": self.model_name,
            "model_options": json.dumps(self.model_options),
            "class_names": json.dumps(list(self.class_names)),
            "preprocess": json.dumps(self.preprocess.to_dict()),
            "config": json.dumps(self.config),
            "epoch": str(self.epoch),
            "metrics": json.dumps(self.metrics),
            "temperature": repr(float(self.temperature)),
        }

    @classmethod
    def from_strings(cls, md: dict[str, str], path: Path) -> CheckpointMeta:
        if md.get("format") != FORMAT:
            raise CheckpointError(
                f"{path} is not a robustfer model checkpoint (metadata format "
                f"{md.get('format')!r}, expected {FORMAT!r}); use a best.safetensors written by "
                "`robustfer train`."
            )
        try:
            return cls(
                model_name=md["model_name"],
                model_options=json.loads(md["model_options"]),
                class_names=tuple(json.loads(md["class_names"])),
                preprocess=Preprocess.from_dict(json.loads(md["preprocess"])),
                config=json.loads(md["config"]),
                epoch=int(md["epoch"]),
                metrics=json.loads(md["metrics"]),
                version=md.get("robustfer_version", "?"),
                temperature=float(md.get("temperature", "1.0")),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: checkpoint metadata is incomplete or corrupt ({e}).") from None


# mkstemp creates owner-only (0600) files; give checkpoints the permissions open() would.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` over ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # after writing: some writers replace the file
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save_model(path: Path, model: nn.Module, meta: CheckpointMeta) -> None:
    """Write weights + metadata as one safetensors file, atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta.to_strings()))


def read_meta(path: str | Path) -> CheckpointMeta:
    """Metadata of a model checkpoint without loading the weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the best.safetensors of a run.")
    try:
        with safe_open(str(path), framework="numpy") as f:
            md = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}).") from None
    return CheckpointMeta.from_strings(md, path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild a model from a checkpoint alone; returns ``(model in eval mode, meta)``.

    ``path`` may be a ``.safetensors`` model checkpoint, a run folder holding
    ``best.safetensors``, or a ``last.pt`` training state.
    """
    from safetensors.torch import load_file

    from robustfer.models import create_model

    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if path.suffix == ".pt":
        state = load_training_state(path)
        meta = CheckpointMeta.from_strings(state["meta"], path)
        weights = state["model"]
    else:
        meta = read_meta(path)
        weights = load_file(str(path))
    model = create_model(meta.model_name, num_classes=meta.num_classes,
                         in_chans=meta.preprocess.in_chans, **meta.model_options)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit model {meta.model_name!r} (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); the checkpoint was written by another version."
        )
    return model.to(device).eval(), meta




def load_training_state(path: Path) -> dict[str, Any]:
    """Read a ``last.pt`` written by :func:`robustfer.engine.checkpoint.save_training_state`."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"training state {path} cannot be read ({e}); delete it to start the run afresh."
        ) from None


def safetensors_checkpoint(path: str | Path, why: str) -> Path:
    """``path`` as a ``.safetensors`` checkpoint (a run folder means its ``best.safetensors``; the
    name of a model shipped in the package, e.g. ``"ran"``, means its file).

    Raises:
        ConfigError: for any other file (an ONNX export, a ``last.pt``), with ``why`` -- what the
            caller needs the checkpoint for and what to do instead.
    """
    from robustfer.errors import ConfigError
    from robustfer.runtime.weights import PRETRAINED, pretrained_path

    p = Path(path)
    if str(path) in PRETRAINED and not p.exists():
        return pretrained_path(str(path))
    if p.is_dir():
        p = p / "best.safetensors"
    if p.suffix != ".safetensors":
        raise ConfigError(f"{path}: {why} (or name a shipped model: {', '.join(sorted(PRETRAINED))})")
    return p
