"""Evaluation: metrics per dataset/subset, per pose bin, and under synthetic occluders.

:func:`evaluate_checkpoint` is what ``robustfer evaluate`` runs; the end of ``robustfer train``
calls :func:`evaluate_datasets` and :func:`write_report` on the best checkpoint. They write ``report.json`` (every number, with the command and checkpoint that produced
it) and PNG plots (confusion matrix of the first dataset, accuracy vs occlusion).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustfer.data.base import FERDataset
from robustfer.data.landmarks import flip_points_tensor, model_inputs
from robustfer.data.transforms import EvalTransform, Preprocess
from robustfer.engine.data import TorchView, build_eval_dataset, make_loader
from robustfer.engine.metrics import classification_metrics, format_table, group_accuracy
from robustfer.errors import ConfigError


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    ds: FERDataset,
    pre: Preprocess,
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    occluder: Any = None,
    occlusion_seed: int = 0,
    occlusion_fill: str = "black",
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "eval",
    tta: str = "none",
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``ds``; returns labels, predictions, probabilities and mean loss.

    ``tta="hflip"`` averages the class probabilities of each image and its mirror image
    (test-time augmentation; the loss is then that of the averaged probabilities).
    """
    if tta not in ("none", "hflip"):
        raise ConfigError(f"eval.tta {tta!r} is not known; use 'none' or 'hflip'.")
    view = TorchView(ds, EvalTransform(pre), occluder, occlusion_seed, occlusion_fill)
    loader = make_loader(view, batch_size, None, num_workers, seed=0)
    was_training = model.training
    model.eval()
    probs, labels, pose_preds, loss_sum = [], [], [], 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x = batch["image"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kw = model_inputs(model, batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x, **kw)
            p = out.logits.float().softmax(-1)
            if tta == "hflip":
                if "landmarks" in kw:  # the mirror image's landmarks, left and right swapped
                    kw = {"landmarks": flip_points_tensor(kw["landmarks"], x.shape[3])}
                p = (p + model(x.flip(3), **kw).logits.float().softmax(-1)) / 2
        if out.pose_logits is not None:  # a model with a head-pose branch (PhaNet)
            pose_preds.append(out.pose_logits.argmax(-1).cpu())
        y = batch["label"].to(device)
        loss_sum += float(torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum"))
        probs.append(p.cpu())
        labels.append(batch["label"])
    model.train(was_training)
    p = torch.cat(probs).numpy() if probs else np.zeros((0, len(ds.classes)))
    y = torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)
    res = {"labels": y, "probs": p, "preds": p.argmax(1) if len(p) else y,
           "loss": np.array(loss_sum / max(1, len(y)))}
    if pose_preds:
        res["pose_preds"] = torch.cat(pose_preds).numpy()
    return res


def calibration_metrics(out: dict[str, np.ndarray], temperature: float = 1.0) -> dict[str, Any]:
    """ECE (15 bins) and NLL of the model's probabilities before and after its temperature,
    with the reliability bins of the probabilities as the model gives them (after)."""
    from robustfer.data.calibration import apply_temperature, nll, reliability

    raw = out["probs"]
    scaled = raw if temperature == 1.0 else apply_temperature(raw, temperature)
    before, after = reliability(raw, out["labels"]), reliability(scaled, out["labels"])
    return {"temperature": float(temperature), "ece_before": before["ece"], "ece": after["ece"],
            "nll_before": nll(raw, out["labels"]), "nll": nll(scaled, out["labels"]),
            "n_bins": after["n_bins"], "bins": after["bins"]}


def dataset_metrics(ds: FERDataset, out: dict[str, np.ndarray], temperature: float = 1.0) -> dict[str, Any]:
    """Classification metrics, calibration (ECE before/after ``temperature``) and the per-pose
    table where samples carry a pose bin."""
    m = classification_metrics(out["labels"], out["preds"], ds.classes)
    m["loss"] = float(out["loss"])
    if len(out["labels"]):
        m["calibration"] = calibration_metrics(out, temperature)
    bins = [s.pose_bin for s in ds.samples]
    if any(b is not None for b in bins):
        m["per_pose_bin"] = {str(k): v for k, v in group_accuracy(out["labels"], out["preds"], bins).items()}
        if "pose_preds" in out:
            # the model's pose head against the samples' pose bins (where known)
            known = np.array([b is not None for b in bins])
            truth = np.array([-1 if b is None else b for b in bins])
            pp = out["pose_preds"]
            m["pose_accuracy"] = float((pp[known] == truth[known]).mean())
            m["pose_n"] = int(known.sum())
    return m


def _occluded_specs(specs: Sequence[str], occlusion_on: Sequence[str]) -> list[str]:
    if not specs:
        return []
    if list(occlusion_on) == ["first"]:
        return [specs[0]]
    if list(occlusion_on) == ["all"]:
        return list(specs)
    unknown = [s for s in occlusion_on if s not in specs]
    if unknown:
        raise ConfigError(
            f"eval.occlusion_on names {unknown}, which are not in data.eval {list(specs)}; "
            "use 'first', 'all' or specs listed in data.eval."
        )
    return list(occlusion_on)


def evaluate_datasets(
    model: nn.Module,
    datasets: dict[str, FERDataset],
    pre: Preprocess,
    device: torch.device,
    eval_cfg: Any,
    num_workers: int = 0,
    channels_last: bool = False,
    progress: bool = True,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Metrics for every dataset, and occlusion robustness for the configured ones;
    calibration is reported for the model's ``temperature``."""
    from robustfer.data.occlusion import parse_occluders

    occluders = parse_occluders(eval_cfg.occluders)
    results: dict[str, Any] = {}
    for spec, ds in datasets.items():
        out = predict_dataset(model, ds, pre, device, eval_cfg.batch_size, num_workers,
                              channels_last=channels_last, progress=progress, desc=spec,
                              tta=eval_cfg.tta)
        results[spec] = dataset_metrics(ds, out, temperature)
    for spec in _occluded_specs(list(datasets), eval_cfg.occlusion_on) if occluders else []:
        occ_res = {}
        for occ in occluders:
            out = predict_dataset(model, datasets[spec], pre, device, eval_cfg.batch_size,
                                  num_workers, occ, eval_cfg.occlusion_seed, eval_cfg.occlusion_fill,
                                  channels_last, progress, desc=f"{spec}+{occ.name}", tta=eval_cfg.tta)
            m = classification_metrics(out["labels"], out["preds"], datasets[spec].classes)
            occ_res[occ.name] = {"accuracy": m["accuracy"],
                                 "mean_class_accuracy": m["mean_class_accuracy"],
                                 "macro_f1": m["macro_f1"], "n": m["n"]}
        if occ_res:
            results[spec]["occlusion"] = {
                "seed": eval_cfg.occlusion_seed, "fill": eval_cfg.occlusion_fill, "results": occ_res}
    return results


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per dataset and per (dataset, occluder) for :func:`format_table`."""
    rows = []
    for spec, m in results.items():
        cal = m.get("calibration", {})
        rows.append({"data": spec, "n": m["n"], "accuracy": m["accuracy"],
                     "mean_class_acc": m["mean_class_accuracy"], "macro_f1": m["macro_f1"],
                     "ece": cal.get("ece"), "ece_before_T": cal.get("ece_before")})
        for name, o in m.get("occlusion", {}).get("results", {}).items():
            rows.append({"data": f"  + {name}", "n": o["n"], "accuracy": o["accuracy"],
                         "mean_class_acc": o["mean_class_accuracy"], "macro_f1": o["macro_f1"]})
    return rows


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (e.g. "Intel(R) Xeon(R) Processor @ 2.80GHz"), or None if unknown.

    ``platform.processor()`` is empty on most Linux systems, so read ``/proc/cpuinfo`` there:
    a result names the hardware that produced it, and speeds differ a lot between CPU models.
    """
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model"):
                return value.strip() or None
    except OSError:
        pass
    return platform.processor() or None


def write_report(path: Path, results: dict[str, Any], context: dict[str, Any],
                 plots: bool = True) -> dict[str, Any]:
    """Write ``report.json`` and plots next to it; returns the report."""
    from robustfer._version import __version__

    report = {
        "robustfer_version": __version__,
        "command": " ".join(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hardware": {"machine": platform.machine(), "processor": cpu_name(),
                     "cpu_count": os.cpu_count(),
                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        **context,
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    if plots and results:
        from robustfer.engine.plots import plot_confusion, plot_occlusion_curve

        first = next(iter(results))
        m = results[first]
        plot_confusion(np.array(m["confusion"]), m["class_names"], path.parent / "confusion.png",
                       title=f"{first}: accuracy {100 * m['accuracy']:.2f} %")
        if "calibration" in m:
            from robustfer.engine.plots import plot_reliability

            c = m["calibration"]
            plot_reliability(c["bins"], path.parent / "reliability.png",
                             title=f"{first}: ECE {c['ece']:.3f} (T = {c['temperature']:.2f}; "
                                   f"{c['ece_before']:.3f} before)")
        for spec, r in results.items():
            if "occlusion" in r:
                occ = {k: v["accuracy"] for k, v in r["occlusion"]["results"].items()}
                safe = spec.replace(":", "_")
                plot_occlusion_curve(occ, path.parent / f"occlusion_{safe}.png",
                                     clean_accuracy=r["accuracy"], title=f"{spec} under occluders")
    return report


def print_summary(results: dict[str, Any]) -> str:
    """The results table as text (also returned)."""
    text = format_table(summary_rows(results), ["data", "n", "accuracy", "mean_class_acc", "macro_f1", "ece",
                                                "ece_before_T"])
    print(text)
    return text


class OnnxModule:
    """An exported model as an ``nn.Module`` returning :class:`ModelOutput` (logits only), so
    that the evaluation engine measures an ``.onnx`` file (e.g. an int8 one) as it is."""

    def __new__(cls, path: str | Path, threads: int | None = None) -> Any:
        from robustfer.models.output import ModelOutput
        from robustfer.runtime.classifier import OnnxClassifier

        clf = OnnxClassifier(path, threads=threads)

        class Onnx(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.classifier = clf

            def forward(self, x: torch.Tensor) -> ModelOutput:
                logits = clf.logits(x.detach().float().contiguous().cpu().numpy())
                return ModelOutput(logits=torch.from_numpy(logits))

        return Onnx().eval()


def evaluate_checkpoint(checkpoint: str | Path, specs: list[str], data_root: str | None,
                        out_dir: Path | None, eval_overrides: dict[str, Any] | None = None,
                        device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Evaluate a saved model on dataset specs, writing ``report.json`` to ``out_dir``.

    ``checkpoint`` may also be an exported ``.onnx`` file (e.g. an int8 one from
    ``robustfer export --int8``): it then runs with ONNX Runtime on the CPU, exactly as shipped.
    """
    from robustfer.engine.config import config_from_dict
    from robustfer.engine.device import resolve_device
    from robustfer.runtime.checkpoint import load_model
    from robustfer.runtime.classifier import meta_from_onnx

    dev = resolve_device(device)
    is_onnx = Path(checkpoint).suffix == ".onnx"
    if is_onnx:
        dev = torch.device("cpu")
        meta = meta_from_onnx(checkpoint)
        model = OnnxModule(checkpoint, threads=torch.get_num_threads())
    else:
        model, meta = load_model(checkpoint, dev)
    cfg = config_from_dict(meta.config)
    if data_root is not None:
        cfg.data.root = data_root
    for k, v in (eval_overrides or {}).items():
        setattr(cfg.eval, k, v)
    specs = specs or list(cfg.data.eval)
    datasets = {s: build_eval_dataset(s, cfg.data) for s in specs}
    # Same memory format as at training time, so the numbers reproduce bit for bit.
    cl = cfg.train.channels_last and not is_onnx
    if cl:
        model = model.to(memory_format=torch.channels_last)
    results = evaluate_datasets(model, datasets, meta.preprocess, dev, cfg.eval,
                                channels_last=cl, progress=progress, temperature=meta.temperature)
    print_summary(results)
    ck = Path(checkpoint)
    out_dir = Path(out_dir) if out_dir else (ck if ck.is_dir() else ck.parent) / "eval"
    print(f"report: {out_dir / 'report.json'}")
    return write_report(out_dir / "report.json", results, {
        "checkpoint": str(checkpoint), "model": meta.model_name, "best_epoch": meta.epoch}, plots=cfg.eval.plots)


def calibrate_checkpoint(checkpoint: str | Path, spec: str | None, data_root: str | None,
                         out: str | Path | None = None, device: str = "auto",
                         progress: bool = True) -> dict[str, Any]:
    """Fit a checkpoint's temperature on a validation split and write it into the checkpoint.

    ``robustfer calibrate``: the weights are unchanged; only the metadata's ``temperature``
    (probabilities = softmax(logits / T)) is set. ``spec`` defaults to the run's validation
    split (``data.val``); a test split is refused. Export again afterwards so that the ONNX
    files carry the temperature too.
    """
    from robustfer.data.calibration import apply_temperature, expected_calibration_error, fit_temperature, nll
    from robustfer.engine.config import config_from_dict
    from robustfer.engine.data import check_not_test
    from robustfer.engine.device import resolve_device
    from robustfer.runtime.checkpoint import load_model, safetensors_checkpoint, save_model

    ck = safetensors_checkpoint(checkpoint, "calibrate a best.safetensors checkpoint (or its run folder), then "
                                "export it again (`robustfer export`) so the ONNX files carry the temperature.")
    dev = resolve_device(device)
    model, meta = load_model(ck, dev)
    cfg = config_from_dict(meta.config)
    if data_root is not None:
        cfg.data.root = data_root
    spec = spec or cfg.data.val
    if not spec:
        raise ConfigError("no validation split: pass --data NAME:valid (the run carved its own "
                          "from train; name a held-out split explicitly).")
    check_not_test(spec, "the calibration split")
    ds = build_eval_dataset(spec, cfg.data)
    res = predict_dataset(model, ds, meta.preprocess, dev, cfg.eval.batch_size, progress=progress,
                          desc=f"calibrate {spec}", tta=cfg.eval.tta)
    t = fit_temperature(res["probs"], res["labels"])
    scaled = apply_temperature(res["probs"], t)
    summary = {"checkpoint": str(ck), "fitted_on": spec, "n": int(len(res["labels"])),
               "temperature_before": meta.temperature, "temperature": t,
               "ece_before": expected_calibration_error(res["probs"], res["labels"]),
               "ece": expected_calibration_error(scaled, res["labels"]),
               "nll_before": nll(res["probs"], res["labels"]), "nll": nll(scaled, res["labels"])}
    meta.temperature = t
    dst = Path(out) if out else ck
    save_model(dst, model, meta)
    summary["out"] = str(dst)
    print(f"temperature {t:.3f} fitted on {spec} ({summary['n']} images): ECE "
          f"{summary['ece_before']:.4f} -> {summary['ece']:.4f}, NLL {summary['nll_before']:.4f} -> "
          f"{summary['nll']:.4f}; written to {dst}")
    return summary
