"""``robustfer annotate-pose``: estimate the head pose and the five landmarks of every image of a
dataset and write a pose-label file (format and readers: :mod:`robustfer.data.pose`).

This is how the PhaNet paper labelled AffectNet's yaw (with an external estimator): the labels
are estimates, and :func:`ran_agreement` measures them against the RAN pose lists.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from robustfer.data.pose import COLUMNS, read_pose_file


def annotate_pose(spec: str, out: str | Path, root: str | Path | None = None, detector: str = "blazeface",
                  upscale: int = 4, progress: bool = True) -> dict[str, Any]:
    """Estimate the head pose and five landmarks of every image of a dataset and write a pose-label
    file (the landmarks in the dataset image's pixels).

    Face crops (48 px FER images) are upscaled ``upscale`` times before detection; the
    largest detection is used. Images where no face is found get empty fields.
    Returns a summary (and, for ``ferplus:test``, the agreement with the RAN pose lists).
    """
    import inspect

    import cv2
    from tqdm import tqdm

    from robustfer.data import build_dataset, get_dataset_info, parse_spec
    from robustfer.inference.detect import DlibDetector, create_detector
    from robustfer.inference.pose import estimate_pose
    from robustfer.runtime.checkpoint import atomic_write

    # Every image a training run may read, whatever its label mode: FERPlus's default
    # (majority) drops the faces whose votes tie, which crossentropy training keeps.
    build = get_dataset_info(parse_spec(spec)[0]).build
    wide = {"label_mode": "crossentropy"} if "label_mode" in inspect.signature(build).parameters else {}
    ds = build_dataset(spec, root=root, **wide)
    # Plain "haar" runs the profile passes on every face here: the view that fires is the pose
    # label, so the frontal pass must not pre-empt them (the agreement in docs/inference.md was
    # measured this way).
    det = (DlibDetector(upsample=0) if detector == "dlib"
           else create_detector("haar:always" if detector == "haar" else detector))
    rows = []
    found = 0
    for i in tqdm(range(len(ds)), desc=f"pose {spec}", disable=not progress):
        img, s = ds[i]
        rgb = np.repeat(img[:, :, None], 3, 2) if img.ndim == 2 else img
        if upscale > 1:
            rgb = cv2.resize(rgb, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        dets = det.detect(rgb)
        if not dets:
            rows.append({"id": s.id, "yaw": "", "pitch": "", "roll": "", "yaw_bin": "", "method": "none",
                         "landmarks": ""})
            continue
        found += 1
        d = max(dets, key=lambda d: d.width * d.height)
        p = estimate_pose(d)

        def f(v: float | None) -> str:
            return "" if v is None else f"{v:.1f}"

        rows.append({"id": s.id, "yaw": f(p.yaw), "pitch": f(p.pitch), "roll": f(p.roll),
                     "yaw_bin": "" if p.yaw_bin is None else str(p.yaw_bin), "method": p.method,
                     "landmarks": _points_text(d.landmarks, upscale)})

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS)
            w.writeheader()
            w.writerows(rows)

    atomic_write(Path(out), write)
    summary: dict[str, Any] = {"spec": spec, "images": len(ds), "faces_found": found,
                               "detector": detector, "out": str(out)}
    print(f"wrote {out}: {len(ds)} images, a face found in {found} ({100 * found / max(1, len(ds)):.1f} %)")
    yaws = np.array([float(r["yaw"]) for r in rows if r["yaw"] != ""])
    if len(yaws):
        summary["yaw_distribution"] = dist = yaw_distribution(yaws)
        print("  |yaw|: " + ", ".join(f"{k} {v:.1f} %" for k, v in dist.items() if k != "median_abs_yaw")
              + f"; median |yaw| {dist['median_abs_yaw']:.1f} deg")
    if ds.name == "ferplus" and ds.split == "test":
        pitch = {r["id"]: float(r["pitch"]) for r in rows if r["pitch"] != ""}
        agr = ran_agreement(read_pose_file(out), root, pitch)
        summary["ran_agreement"] = agr
        for k, v in agr.items():
            print(f"  RAN {k}: " + ", ".join(f"{m} {x:.3f}" if isinstance(x, float) else f"{m} {x}"
                                            for m, x in v.items()))
    return summary


def _points_text(landmarks: np.ndarray | None, upscale: int) -> str:
    """A detection's five points as the file's ``"x1 y1 ... x5 y5"`` in pixels of the dataset's
    image (the detector saw it ``upscale`` times larger); empty unless all five are known."""
    if landmarks is None:
        return ""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        return ""
    pts = (pts + 0.5) / max(1, upscale) - 0.5  # pixel centres onto pixel centres
    return " ".join(f"{v:.2f}" for v in pts.ravel())


YAW_EDGES = (0, 15, 30, 45, 60, 90)


def yaw_distribution(yaws: np.ndarray) -> dict[str, float]:
    """Share (%) of faces per |yaw| band of :data:`YAW_EDGES` degrees, and the median |yaw|."""
    a = np.abs(np.asarray(yaws, dtype=np.float64))
    out = {}
    for lo, hi in zip(YAW_EDGES[:-1], YAW_EDGES[1:]):
        top = a <= hi if hi == YAW_EDGES[-1] else a < hi
        out[f"{lo}-{hi}"] = float(100 * np.mean((a >= lo) & top))
    out["median_abs_yaw"] = float(np.median(a))
    return out


def ran_agreement(poses: dict[str, tuple[float | None, int | None]],
                  root: str | Path | None = None,
                  pitch: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """How well estimated poses reproduce the RAN pose>30 / pose>45 lists of FERPlus test.

    For each threshold t the estimate says "pose > t" when ``|yaw| > t`` (or, for view-only
    estimates, when the yaw bin is a profile bin); it is compared with membership of the RAN
    list over the majority-label test images that have an estimate. Reported: coverage (share of
    test images with an estimate), accuracy, precision, recall, the list's base rate, and --
    threshold-free -- the ROC AUC of ``|yaw|`` and, given ``pitch``, of ``max(|yaw|, |pitch|)``
    (the RAN lists count faces turned up or down too).
    """
    from robustfer.data import build_dataset

    test = build_dataset("ferplus:test", root=root)
    out: dict[str, dict[str, Any]] = {}
    for t in (30, 45):
        members = {s.id for s in build_dataset(f"ferplus:test:pose{t}", root=root).samples}
        y_true, y_pred = [], []
        for s in test.samples:
            yaw, b = poses.get(s.id, (None, None))
            if yaw is not None:
                pred = abs(yaw) > t
            elif b is not None:
                pred = b in (0, 4) if t >= 45 else b != 2
            else:
                continue
            y_true.append(s.id in members)
            y_pred.append(pred)
        yt, yp = np.array(y_true, bool), np.array(y_pred, bool)
        tp = int((yt & yp).sum())
        aucs: dict[str, float] = {}
        with_yaw = [s for s in test.samples if poses.get(s.id, (None, None))[0] is not None]
        y_auc = np.array([s.id in members for s in with_yaw], bool)
        if 0 < y_auc.sum() < len(y_auc):
            from sklearn.metrics import roc_auc_score

            yaw = np.array([abs(poses[s.id][0]) for s in with_yaw])  # type: ignore[arg-type]
            aucs["auc_abs_yaw"] = float(roc_auc_score(y_auc, yaw))
            if pitch is not None:
                pit = np.array([abs(pitch.get(s.id, 0.0)) for s in with_yaw])
                aucs["auc_max_abs_yaw_pitch"] = float(roc_auc_score(y_auc, np.maximum(yaw, pit)))
        out[f"pose>{t}"] = {
            "coverage": len(yt) / max(1, len(test)),
            "accuracy": float((yt == yp).mean()) if len(yt) else math.nan,
            "precision": tp / max(1, int(yp.sum())),
            "recall": tp / max(1, int(yt.sum())),
            "base_rate": float(yt.mean()) if len(yt) else math.nan,
            "n": len(yt),
            **aucs,
        }
    return out
