"""Models shipped inside the package: ``Recognizer.from_pretrained(name)``."""

from __future__ import annotations

from pathlib import Path

from robustfer.errors import ConfigError

#: Pretrained models shipped inside the package: name -> file in robustfer/weights/ (see
#: MODEL_CARD.md). ``default`` (version 2: FERPlus + SFEW + muxspace_dev, realistic occluders,
#: calibrated) has its float32 ONNX export (``.onnx``) and int8 file (``.int8.onnx``) beside it;
#: ``ferplus-v1``, the FERPlus-only model it replaced (kept for comparison and as the
#: distillation teacher of the version-2 recipe), ships as ``.safetensors`` only (PyTorch backend);
#: ``ran``, RAN with fixed regions from the attention comparison (the attention option, whose
#: regions ``robustfer explain --checkpoint ran`` draws), ships with its float32 ``.onnx``.
PRETRAINED = {"default": "ferplus_v2.safetensors", "ferplus-v1": "ferplus_compact_cnn.safetensors",
              "ran": "ferplus_ran.safetensors"}


def pretrained_path(name: str) -> Path:
    """The ``.safetensors`` file of a shipped pretrained model."""
    from importlib.resources import files

    if name not in PRETRAINED:
        raise ConfigError(f"unknown pretrained model {name!r}; shipped: {sorted(PRETRAINED)}, "
                          "or pass the path of a best.safetensors.")
    p = Path(str(files("robustfer") / "weights" / PRETRAINED[name]))
    if not p.is_file():
        raise ConfigError(f"the shipped model file {p} is missing; reinstall robustfer.")
    return p
