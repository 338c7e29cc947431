"""Haar detector settings: detection time on a 640x480 photo against recall on real faces.

Recall set: FER2013Test faces (150 drawn with seed 0 from each spec given, default the RAN
pose > 45 list and the whole test split), each padded by 8 px, upscaled to a random side of
64-199 px and pasted at a random place into a blurred 640x480 background (``samples/camera.png``
blurred so it holds no face). A face counts as found when a detection overlaps it with IoU > 0.3.
Time: median of 30 ``detect`` calls on ``samples/grace_hopper.jpg`` cut to 640x480 (one
frontal face), 2 OpenCV threads.

Two-face photos (what ``profile="auto"`` can give up): 150 photos, each with one face from the
RAN pose > 45 list in one half and one other FER2013Test face in the other half (same sizes and
background). For ``always`` and ``auto`` it reports how often the turned face is found, over
all photos and over the photos where the other face was found (the case where ``auto`` skips
the profile passes).

Run it from the repository root on an otherwise idle machine:

    python benchmarks/haar_settings.py [SPEC ...]
"""
import os, sys, time, statistics
import numpy as np, cv2
from robustfer.data import build_dataset
from robustfer.inference import HaarDetector, load_image
from robustfer.inference.detect import iou

cv2.setNumThreads(2)
root = os.environ.get("ROBUSTFER_DATA", "../shared/data")
photo = load_image("samples/grace_hopper.jpg")
photo = cv2.resize(photo, (640, round(photo.shape[0] * 640 / photo.shape[1])))[60:540]
bg = cv2.GaussianBlur(cv2.resize(load_image("samples/camera.png"), (640, 480)), (0, 0), 6)
if bg.ndim == 2: bg = cv2.cvtColor(bg, cv2.COLOR_GRAY2RGB)
specs = sys.argv[1:] or ["ferplus:test:pose45", "ferplus:test"]
rng = np.random.default_rng(0)
sets = {}
for spec in specs:
    ds = build_dataset(spec, root=root)
    idx = rng.choice(len(ds), size=min(150, len(ds)), replace=False)
    items = []
    for i in idx:
        img, s = ds[int(i)]
        side = int(rng.integers(64, 200))
        face = cv2.resize(cv2.copyMakeBorder(img, 8, 8, 8, 8, cv2.BORDER_REPLICATE), (side, side), interpolation=cv2.INTER_CUBIC)
        if face.ndim == 2: face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
        x = int(rng.integers(0, 640 - side)); y = int(rng.integers(0, 480 - side))
        im = bg.copy(); im[y:y + side, x:x + side] = face
        m = side * 8 / (48 + 16)
        items.append((im, (x + m, y + m, x + side - m, y + side - m)))
    sets[spec] = items

def paste(im, img, side, x, y):
    face = cv2.resize(cv2.copyMakeBorder(img, 8, 8, 8, 8, cv2.BORDER_REPLICATE), (side, side), interpolation=cv2.INTER_CUBIC)
    if face.ndim == 2: face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
    im[y:y + side, x:x + side] = face
    m = side * 8 / (48 + 16)
    return (x + m, y + m, x + side - m, y + side - m)

turned, others = build_dataset("ferplus:test:pose45", root=root), build_dataset("ferplus:test", root=root)
pairs = []
for _ in range(150):
    im = bg.copy()
    left = bool(rng.integers(0, 2))
    boxes = []
    for ds, on_left in ((turned, left), (others, not left)):
        img, _ = ds[int(rng.integers(0, len(ds)))]
        side = int(rng.integers(64, 200))
        x = int(rng.integers(0, 320 - side)) + (0 if on_left else 320)
        y = int(rng.integers(0, 480 - side))
        boxes.append(paste(im, img, side, x, y))
    pairs.append((im, boxes[0], boxes[1]))

def timeit(det, n=30):
    det.detect(photo); ts = []
    for _ in range(n):
        t = time.perf_counter(); det.detect(photo); ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)

configs = {
  "always": dict(profile="always"),
  "auto (default)": dict(profile="auto"),
  "256,1.2": dict(max_side=256),
  "224,1.2": dict(max_side=224),
  "256,1.3": dict(max_side=256, scale_factor=1.3),
  "224,1.25": dict(max_side=224, scale_factor=1.25),
  "200,1.25": dict(max_side=200, scale_factor=1.25),
  "320,1.3": dict(scale_factor=1.3),
}
for name, kw in configs.items():
    det = HaarDetector(**kw)
    ms = timeit(det)
    rec = []
    for spec, items in sets.items():
        hit = 0
        for im, box in items:
            hit += any(iou(d.box, box) > 0.3 for d in det.detect(im))
        rec.append(f"{spec} {100 * hit / len(items):.1f}%")
    print(f"{name:24s} {ms:6.1f} ms  " + "  ".join(rec), flush=True)

print("\ntwo-face photos: turned (RAN pose > 45) face found, over all / over photos where the other face was found")
for name in ("always", "auto"):
    det = HaarDetector(profile=name)
    t_all = t_cond = n_cond = 0
    for im, tb, ob in pairs:
        d = det.detect(im)
        t = any(iou(x.box, tb) > 0.3 for x in d)
        o = any(iou(x.box, ob) > 0.3 for x in d)
        t_all += t; n_cond += o; t_cond += t and o
    print(f"{name:8s} turned {100 * t_all / len(pairs):.1f}% of {len(pairs)}; "
          f"{100 * t_cond / max(1, n_cond):.1f}% of the {n_cond} with the other face found", flush=True)
