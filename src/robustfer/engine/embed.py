"""A t-SNE picture of what a trained model represents: ``robustfer tsne``.

The points are a model's ``ModelOutput.features`` (the representation its classifier reads:
PhaNet's joint representation, RAN's P, a baseline's pooled features) on images of one dataset
split, embedded in 2-D with scikit-learn's t-SNE and coloured by expression or by head-pose bin
(the PhaNet paper's Fig. 14 colours its joint representation both ways).

Pose bins come from the samples (KDEF's pan angles) or from a pose-label file written by
``robustfer annotate-pose`` (``pose_file=``, or the one the model was trained with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustfer.errors import ConfigError


def embed_checkpoint(checkpoint: str | Path, spec: str, data_root: str | None = None,
                     pose_file: str | None = None, max_items: int = 2000, seed: int = 0,
                     perplexity: float = 30.0, batch_size: int = 256,
                     device: str = "cpu") -> dict[str, Any]:
    """Features of ``checkpoint`` on ``max_items`` images of ``spec`` and their 2-D t-SNE.

    Images are drawn without replacement with ``seed`` (all when the split is smaller). Returns
    ``points`` (N, 2), ``features`` (N, D), ``labels`` (N,), ``pose_bins`` (N, -1 unknown),
    ``class_names`` and ``ids``.

    Raises:
        ConfigError: when the model exposes no ``features``, or the split has under 5 images.
    """
    from sklearn.manifold import TSNE

    from robustfer.data.landmarks import takes_landmarks
    from robustfer.engine.config import config_from_dict
    from robustfer.engine.data import build_eval_dataset
    from robustfer.engine.train import EvalTransform
    from robustfer.runtime.checkpoint import load_model

    model, meta = load_model(checkpoint, device)
    cfg = config_from_dict(meta.config)
    if data_root is not None:
        cfg.data.root = data_root
    if pose_file is not None:
        cfg.data.pose_file = pose_file
    ds = build_eval_dataset(spec, cfg.data)
    n = len(ds)
    if n < 5:
        raise ConfigError(f"{spec} has {n} images; t-SNE needs at least 5.")
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(max_items, n), replace=False))
    from robustfer.engine.data import TorchView

    view = TorchView(ds, EvalTransform(meta.preprocess))  # images, and landmarks where the data has them
    feats: list[torch.Tensor] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(idx), batch_size):
            items = [view[int(i)] for i in idx[start:start + batch_size]]
            x = torch.stack([it["image"] for it in items])
            kw = {}
            if "landmarks" in items[0] and takes_landmarks(model):
                kw["landmarks"] = torch.stack([it["landmarks"] for it in items]).to(device)
            out = model(x.to(device), **kw)
            if out.features is None:
                raise ConfigError(f"model {meta.model_name!r} returns no features to embed; "
                                  "t-SNE needs a model whose ModelOutput has features.")
            feats.append(out.features.float().flatten(1).cpu())
    f = torch.cat(feats).numpy()
    perp = min(perplexity, (len(f) - 1) / 3)  # scikit-learn requires perplexity < n
    pts = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(f)
    samples = [ds.samples[int(i)] for i in idx]
    return {"points": pts, "features": f, "labels": np.array([s.label for s in samples]),
            "pose_bins": np.array([-1 if s.pose_bin is None else s.pose_bin for s in samples]),
            "class_names": list(meta.class_names), "ids": [s.id for s in samples]}


def tsne_figure(checkpoint: str | Path, spec: str, out: str | Path, color: str = "expression",
                **kwargs: Any) -> Path:
    """Write a t-SNE scatter of the model's features on ``spec`` coloured by ``color``
    (``"expression"`` or ``"pose"``) to ``out`` (PNG)."""
    from robustfer.data.pose import YAW_BIN_NAMES
    from robustfer.engine.plots import plot_embedding

    if color not in ("expression", "pose"):
        raise ConfigError(f"color {color!r}: use 'expression' or 'pose'.")
    e = embed_checkpoint(checkpoint, spec, **kwargs)
    if color == "pose":
        if (e["pose_bins"] < 0).all():
            raise ConfigError(f"no image of {spec} has a pose bin; pass a pose-label file written by "
                              "`robustfer annotate-pose` (--pose-file).")
        groups, names = e["pose_bins"], list(YAW_BIN_NAMES)
    else:
        groups, names = e["labels"], e["class_names"]
    return plot_embedding(e["points"], groups, names, out,
                          title=f"t-SNE of {Path(checkpoint).name} features on {spec}, by {color}")
