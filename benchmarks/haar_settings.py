"""Haar detector settings: detection time on a 640x480 photo against recall on real faces.

Recall set: FER2013Test faces (150 drawn with seed 0 from each spec given, default the RAN
pose > 45 list and the whole test split), each padded by 8 px, upscaled to a random side of
64-199 px and pasted at a random place into a blurred 640x480 background (``samples/camera.png``
blurred so it holds no face). A face counts as found when a detection overlaps it with IoU > 0.3.
Time: median of 30 ``detect`` calls on ``samples/grace_hopper.jpg`` cut to 640x480 (one
frontal face), 2 OpenCV threads. Run it from the repository root on an otherwise idle machine:

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

def timeit(det, n=30):
    det.detect(photo); ts = []
    for _ in range(n):
        t = time.perf_counter(); det.detect(photo); ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)

configs = {
  "now(320,1.2,always)": dict(),
  "auto": dict(profile="auto"),
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
