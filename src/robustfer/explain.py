"""What a model attended to, drawn: ``robustfer explain IMAGE --checkpoint CKPT``.

One PNG per face. The left panel is the face exactly as the model saw it (its own
preprocessing, undone for display) with the model's attention drawn on it; the right panel
shows the evidence behind the prediction:

* **RAN** (``ModelOutput.boxes`` + ``attention_weights``): every region outlined, labelled with
  its self-attention weight mu and relation weight nu (Eq. 1 and 3 of the paper), line width
  and label ordered by mu * nu, the weight each region gets in the final representation; bars
  of mu * nu per region.
* **SCAN-CCI** (``attention_maps`` + ``region_logits``): the spatial attention map (the
  channel mean of the local SCAN weights) over the face, the four complementary-context
  regions outlined with their top class; bars of each head's probability for the predicted
  expression.
* **PhaNet** (``boxes`` + ``attention_weights`` c1..c3): the two nested attended squares on
  the face, the zoomed views S2 and S3 with their scale weights c_i (Eq. 7) and per-scale
  probability of the predicted expression, and the task weights lambda_e / lambda_p.
* **AHA**: the global branch's spatial attention over the face, the four regions with their
  LSTM fusion weights alpha_k, and each branch classifier's probability of the prediction.
* any other model: the expression probabilities, and its attention map where it returns one.

The figure is drawn on matplotlib's Agg canvas (no pyplot state, no window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustfer.errors import ConfigError
from robustfer.models.output import ModelOutput


@dataclass
class Explanation:
    """One face's model input (for display), the full model output and the class names."""

    face: np.ndarray  # (S, S) or (S, S, 3) float in [0, 1]: the model input, denormalised
    output: ModelOutput  # batch of one, on CPU
    class_names: tuple[str, ...]
    model_name: str
    source: str  # image path (and face number)
    branch_names: tuple[str, ...] = ()  # names of region_logits' rows, where the model gives them

    @property
    def probabilities(self) -> np.ndarray:
        return self.output.logits.float().softmax(-1)[0].numpy()


def _denormalise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    img = x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    img = np.clip(img, 0, 1)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def explain_image(recognizer: Any, image: Any, detect: bool = True, source: str = "",
                  model_name: str = "") -> list[Explanation]:
    """Run ``recognizer``'s PyTorch model on every face of ``image``; keep the whole output.

    Args:
        recognizer: a :class:`~robustfer.inference.Recognizer` with the PyTorch backend.
        image: anything :func:`~robustfer.inference.load_image` reads.
        detect: find faces first (``False``: the image is one face crop).
        source: a name for the figure titles.
        model_name: the registry name, for the titles (default: the model's class name).
    """
    import torch

    from robustfer.inference.io import load_image

    model = getattr(recognizer.classifier, "model", None)
    if model is None:
        raise ConfigError("explain needs the PyTorch model (a best.safetensors checkpoint), not ONNX.")
    rgb = load_image(image)
    pre = recognizer.preprocess
    out = []
    faces = recognizer._crops(rgb, detect)
    points = recognizer._points(faces)  # the detector's landmarks in each crop, for models taking them
    dev = next(model.parameters()).device
    for i, (_, crop, _) in enumerate(faces):
        x = recognizer.face_tensor(crop)
        kw = {} if points[i] is None else {"landmarks": torch.from_numpy(points[i])[None].to(dev)}
        with torch.inference_mode():
            o = model(torch.from_numpy(x)[None].to(dev), **kw)
        o = ModelOutput(**{k: (v.detach().float().cpu() if isinstance(v, torch.Tensor) else
                               {n: t.detach().float().cpu() for n, t in v.items()} if isinstance(v, dict) else v)
                           for k, v in vars(o).items()})
        out.append(Explanation(_denormalise(x, pre.mean, pre.std), o, tuple(recognizer.class_names),
                               model_name or type(model).__name__,
                               f"{source} face {i + 1}" if detect else source,
                               tuple(getattr(model, "branch_names", ()))))
    return out


def _face_panel(ax: Any, e: Explanation) -> None:
    s = e.face.shape[0]
    ax.imshow(e.face, cmap="gray" if e.face.ndim == 2 else None, vmin=0, vmax=1,
              extent=(0, e.face.shape[1], s, 0), interpolation="bilinear")
    ax.set_xlim(0, e.face.shape[1])
    ax.set_ylim(s, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_ran(fig: Any, e: Explanation) -> None:
    import matplotlib
    from matplotlib.patches import Rectangle

    o = e.output
    mu = o.attention_weights[0].numpy()
    nu = o.extras.get("relation_weights")
    nu = nu[0].numpy() if nu is not None else np.ones_like(mu)
    boxes = o.boxes[0].numpy()
    share = mu * nu / float((mu * nu).sum())
    names = ["face"] + [f"r{i}" for i in range(1, len(mu))]
    cmap = matplotlib.colormaps["viridis"]
    colour = [cmap(0.1 + 0.85 * (v - share.min()) / max(1e-12, float(share.max() - share.min()))) for v in share]
    # one small copy of the face per region, the region outlined, its mu and nu under it
    cols = 4
    rows = -(-len(mu) // cols)
    grid = fig.add_gridspec(rows, cols + 3, wspace=0.08, hspace=0.3)
    for i in range(len(mu)):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        _face_panel(ax, e)
        x0, y0, x1, y1 = boxes[i]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour[i], linewidth=2.0))
        ax.set_title(f"{names[i]}", fontsize=7, pad=2)
        ax.set_xlabel(f"\u03bc {mu[i]:.2f}  \u03bd {nu[i]:.2f}", fontsize=6, labelpad=1)
    ax2 = fig.add_subplot(grid[:, cols + 1:])
    ax2.barh(range(len(mu))[::-1], share, color=colour)
    ax2.set_yticks(range(len(mu))[::-1], names, fontsize=7)
    ax2.set_xlabel("region's share of the representation: \u03bc\u03bd / \u03a3 \u03bc\u03bd", fontsize=7)
    _title_prediction(ax2, e)
    fig.text(0.02, 0.01, "\u03bc: self-attention weight (Eq. 1); \u03bd: relation-attention weight (Eq. 3)",
             fontsize=6)


def _draw_scan_cci(fig: Any, e: Explanation) -> None:
    from matplotlib.patches import Rectangle

    o = e.output
    s_h, s_w = e.face.shape[:2]
    att = o.attention_maps[0].mean(0).numpy()
    att = (att - att.min()) / max(1e-12, float(att.max() - att.min()))
    ax = fig.add_subplot(1, 2, 1)
    _face_panel(ax, e)
    ax.imshow(att, cmap="jet", alpha=0.45, extent=(0, s_w, s_h, 0), interpolation="bilinear")
    rl = o.region_logits[0].softmax(-1).numpy()  # (5, C): attention head, then CCI regions
    pred = int(np.argmax(e.probabilities))
    # the CCI regions are a 2x2 grid of the layer3 map, i.e. of the face
    for r in range(rl.shape[0] - 1):
        gy, gx = divmod(r, 2)
        top = int(np.argmax(rl[r + 1]))
        ax.add_patch(Rectangle((gx * s_w / 2, gy * s_h / 2), s_w / 2, s_h / 2, fill=False, edgecolor="white",
                               linewidth=0.8, linestyle="--"))
        ax.text(gx * s_w / 2 + 0.5, gy * s_h / 2 + 0.5, f"R{r + 1}: {e.class_names[top]} {rl[r + 1, top]:.2f}",
                color="white", fontsize=6, va="top", bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5,
                                                           "linewidth": 0})
    ax.set_title("SCAN spatial attention; CCI regions", fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    heads = ["attention"] + [f"region R{r}" for r in range(1, rl.shape[0])]
    ax2.barh(range(len(heads))[::-1], rl[:, pred], color="tab:blue")
    ax2.set_yticks(range(len(heads))[::-1], heads, fontsize=7)
    ax2.set_xlim(0, 1)
    ax2.set_xlabel(f"each head's probability of '{e.class_names[pred]}'", fontsize=7)
    _title_prediction(ax2, e)


def _draw_phanet(fig: Any, e: Explanation) -> None:
    """PhaNet: the three nested scales (Eq. 2, 5) with their scale weights c_i (Eq. 7)."""
    from matplotlib.patches import Rectangle

    o = e.output
    boxes = o.boxes[0].numpy()  # (3, 4): the whole face, then the two zoomed squares
    c = o.attention_weights[0].numpy()
    rl = o.region_logits[0].float().softmax(-1).numpy()  # (3, C) per-scale probabilities
    pred = int(np.argmax(e.probabilities))
    colours = ["white", "tab:orange", "tab:red"]
    grid = fig.add_gridspec(1, 5, wspace=0.15)
    ax = fig.add_subplot(grid[0, 0:2])
    _face_panel(ax, e)
    for i in range(1, len(boxes)):
        x0, y0, x1, y1 = boxes[i]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colours[i], linewidth=2.0))
    ax.set_title("scales S1 (face), S2 (orange), S3 (red)", fontsize=8)
    # what the deeper scales look at, cut from the displayed face (display only)
    for i in (1, 2):
        a = fig.add_subplot(grid[0, 1 + i])
        x0, y0, x1, y1 = (round(float(v)) for v in boxes[i])
        crop = e.face[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
        a.imshow(crop, cmap="gray" if crop.ndim == 2 else None, vmin=0, vmax=1)
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"S{i + 1}: c{i + 1} {c[i]:.2f}", fontsize=7)
        a.set_xlabel(f"p({e.class_names[pred]}) {rl[i, pred]:.2f}", fontsize=6)
    ax2 = fig.add_subplot(grid[0, 4])
    ax2.barh(range(3)[::-1], c, color=colours[:1] + colours[1:], edgecolor="black")
    ax2.set_yticks(range(3)[::-1], ["S1", "S2", "S3"], fontsize=7)
    ax2.set_xlabel("scale weight c_i (Eq. 7)", fontsize=7)
    _title_prediction(ax2, e)
    lam = o.extras.get("lambda")
    extra = f"; task weights \u03bb_e {float(lam[0, 0]):.2f}, \u03bb_p {float(lam[0, 1]):.2f}" if lam is not None else ""
    fig.text(0.02, 0.01, f"S1 p({e.class_names[pred]}) {rl[0, pred]:.2f}{extra}", fontsize=6)


def _draw_aha(fig: Any, e: Explanation) -> None:
    """AHA: the global branch's spatial attention, the regions with their LSTM weights, and
    each branch classifier's probability of the predicted expression."""
    from matplotlib.patches import Rectangle

    o = e.output
    s_h, s_w = e.face.shape[:2]
    ax = fig.add_subplot(1, 2, 1)
    _face_panel(ax, e)
    if o.attention_maps is not None:
        att = o.attention_maps[0].mean(0).float().numpy()
        att = (att - att.min()) / max(1e-12, float(att.max() - att.min()))
        ax.imshow(att, cmap="jet", alpha=0.45, extent=(0, s_w, s_h, 0), interpolation="bilinear")
    names = list(e.branch_names)
    weights = o.extras.get("region_weights")
    if o.boxes is not None:
        for k, (x0, y0, x1, y1) in enumerate(o.boxes[0].numpy()):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.0))
            label = f"\u03b1 {float(weights[0, k]):.2f}" if weights is not None else f"r{k + 1}"
            ax.text(x0 + 0.5, y0 + 0.5, label, color="white", fontsize=6, va="top",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "linewidth": 0})
    # The concatenation ablation (fusion="concat") has no LSTM, hence no region weights.
    ax.set_title("global spatial attention; regions "
                 + ("(\u03b1: LSTM weight)" if weights is not None else "(concatenated: no LSTM weights)"),
                 fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    pred = int(np.argmax(e.probabilities))
    if o.region_logits is not None:
        rl = o.region_logits[0].float().softmax(-1).numpy()
        names = names if len(names) == len(rl) else [f"branch {i}" for i in range(len(rl))]
        ax2.barh(range(len(rl))[::-1], rl[:, pred], color="tab:blue")
        ax2.set_yticks(range(len(rl))[::-1], names, fontsize=7)
        ax2.set_xlim(0, 1)
        ax2.set_xlabel(f"each branch's probability of '{e.class_names[pred]}'", fontsize=7)
    _title_prediction(ax2, e)


def _draw_generic(fig: Any, e: Explanation) -> None:
    ax = fig.add_subplot(1, 2, 1)
    _face_panel(ax, e)
    if e.output.attention_maps is not None:
        att = e.output.attention_maps[0].mean(0).numpy()
        att = (att - att.min()) / max(1e-12, float(att.max() - att.min()))
        ax.imshow(att, cmap="jet", alpha=0.45, extent=(0, e.face.shape[1], e.face.shape[0], 0))
        ax.set_title("attention map", fontsize=8)
    else:
        ax.set_title("model input (this model returns no attention)", fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    p = e.probabilities
    ax2.barh(range(len(p))[::-1], p, color="tab:blue")
    ax2.set_yticks(range(len(p))[::-1], e.class_names, fontsize=7)
    ax2.set_xlim(0, 1)
    ax2.set_xlabel("probability", fontsize=7)
    _title_prediction(ax2, e)


def _title_prediction(ax: Any, e: Explanation) -> None:
    p = e.probabilities
    top = np.argsort(p)[::-1][:3]
    ax.set_title(" | ".join(f"{e.class_names[i]} {p[i]:.2f}" for i in top), fontsize=8)
    ax.tick_params(labelsize=6)


def render(e: Explanation, path: str | Path) -> Path:
    """Draw ``e`` as a PNG at ``path``; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from robustfer.engine.plots import _save as save_figure

    o = e.output
    family = e.model_name.split("_")[0]
    ran = family == "ran" or (family not in ("phanet", "aha") and o.boxes is not None
                                and o.attention_weights is not None)
    rows = -(-o.attention_weights.shape[1] // 4) if ran else 0  # type: ignore[union-attr]
    fig = Figure(figsize=(9, 1.0 + 1.7 * rows) if ran else (9, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    if family == "phanet" and o.boxes is not None and o.attention_weights is not None:
        _draw_phanet(fig, e)
    elif family == "aha":
        _draw_aha(fig, e)
    elif ran:
        _draw_ran(fig, e)
    elif o.attention_maps is not None and o.region_logits is not None:
        _draw_scan_cci(fig, e)
    else:
        _draw_generic(fig, e)
    fig.suptitle(f"{e.model_name}: {e.source}", fontsize=8)
    return save_figure(fig, path)


def explain(images: Sequence[str | Path], checkpoint: str | Path, out_dir: str | Path = ".",
            detect: bool = True, detector: str = "blazeface") -> tuple[list[Path], list[str]]:
    """Write one explanation PNG per face of each image into ``out_dir``.

    Returns:
        (written PNG paths, one message per image that failed or had no face).
    """
    from robustfer.errors import RobustferError
    from robustfer.inference import Recognizer

    from robustfer.runtime.checkpoint import safetensors_checkpoint

    ckpt = safetensors_checkpoint(checkpoint, "explain needs a best.safetensors checkpoint (or its run folder); "
                                  "an ONNX file holds no attention outputs.")
    rec = Recognizer.from_checkpoint(ckpt, detector=detector)
    model_name = rec.model_name
    written: list[Path] = []
    problems: list[str] = []
    out_dir = Path(out_dir)
    for img in images:
        name = Path(img).stem
        try:
            exps = explain_image(rec, img, detect=detect, source=Path(img).name, model_name=model_name)
        except RobustferError as err:
            problems.append(f"{img}: {err}")
            continue
        if not exps:
            problems.append(f"{img}: no face found; for a face crop use --no-detect")
        for i, e in enumerate(exps):
            suffix = f"_face{i + 1}" if len(exps) > 1 else ""
            written.append(render(e, out_dir / f"{name}{suffix}_explain.png"))
    return written, problems
