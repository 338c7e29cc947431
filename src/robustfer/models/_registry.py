"""Model registry: every FER model is built by name (``create_model("resnet18")``)."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from robustfer.errors import ModelError

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder and a one-line description."""

    name: str
    build: ModelBuilder
    description: str


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, description: str = "") -> Callable[[ModelBuilder], ModelBuilder]:
    """Register ``build(num_classes, in_chans, **options) -> nn.Module`` under ``name``.

    Raises:
        ValueError: when ``name`` is already registered.
    """

    def deco(fn: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        _MODELS[name] = ModelInfo(name, fn, doc)
        return fn

    return deco


def _ensure_models() -> None:
    import robustfer.models  # noqa: F401  (importing registers the built-in models)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    _ensure_models()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; an unknown name lists the close matches."""
    _ensure_models()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_MODELS))} "
            "(`robustfer models`)."
        )
    return _MODELS[name]


def create_model(
    name: str, num_classes: int = 8, in_chans: int = 1, **options: Any
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name, e.g. ``"resnet18"`` or ``"compact_cnn"``.
        num_classes: size of the expression head (7 or 8 in robustfer's label spaces).
        in_chans: input channels (1 for grayscale FER2013/FERPlus, 3 for RGB datasets).
        **options: model-specific knobs (width, stem stride, dropout, ...).

    Raises:
        ModelError: on an unknown name or an option the model does not take.
    """
    info = model_info(name)
    params = inspect.signature(info.build).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not accepts_any]
    if unknown:
        known = [k for k in params if k not in ("num_classes", "in_chans")]
        raise ModelError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
            f"{known or 'none'}."
        )
    return info.build(num_classes=num_classes, in_chans=in_chans, **options)
