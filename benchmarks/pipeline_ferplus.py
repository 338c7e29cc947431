"""The whole pipeline on FERPlus test faces presented as photos: what the front end costs.

Two presentations of each FER2013Test face:

* ``--mode upscaled``: padded by 16 px (replicated border, as the face touches the crop's
  edges) and upscaled 4x to a 320x320 image -- a face photo;
* ``--mode pasted`` (default): padded by 8 px, scaled to a side of 96-240 px and pasted at a
  random place into a 640x480 photo (the face-free backgrounds of ``benchmarks/front_end.py``),
  seed 0.

Each photo goes through ``Recognizer.predict`` (detect -> landmarks -> align -> classify) with
the shipped model. Reported: how often a face is found, and accuracy (official majority labels)
of the pipeline against classifying the dataset's own crop directly (``detect=False``), on the
found faces and over all faces (a missed face counted wrong).

    python benchmarks/pipeline_ferplus.py --data-root ../shared/data [--mode pasted] [--detector blazeface]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import cv2

    from robustfer import Recognizer
    from robustfer.data import build_dataset
    from robustfer.inference.detect import iou

    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default=None)
    p.add_argument("--spec", default="ferplus:test")
    p.add_argument("--detector", default="blazeface")
    p.add_argument("--mode", default="pasted", choices=["pasted", "upscaled"])
    p.add_argument("--backend", default="auto")
    p.add_argument("--no-align", action="store_true", help="box crops instead of eye-aligned crops")
    a = p.parse_args()
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from front_end import backgrounds, paste

    bgs = backgrounds()
    rng = np.random.default_rng(0)
    ds = build_dataset(a.spec, root=a.data_root)
    rec = Recognizer.from_pretrained("default", detector=a.detector, backend=a.backend,
                                     use_landmarks=not a.no_align)
    idx = {n: i for i, n in enumerate(rec.class_names)}
    found = direct_ok = pipe_ok = direct_ok_found = 0
    for i in range(len(ds)):
        img, s = ds[i]
        y = s.label
        d = rec.predict(img, detect=False)[0]
        direct = idx[d.expression] == y
        direct_ok += direct
        if a.mode == "upscaled":
            photo = cv2.resize(cv2.copyMakeBorder(img, 16, 16, 16, 16, cv2.BORDER_REPLICATE), None,
                               fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
            truth = (64.0, 64.0, 256.0, 256.0)
        else:
            photo = cv2.GaussianBlur(bgs[int(rng.integers(len(bgs)))], (0, 0), float(rng.uniform(0.5, 4.0)))
            side = int(rng.integers(96, 241))
            px, py = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
            truth = paste(photo, img, side, px, py)
        faces = [f for f in rec.predict(photo) if iou(f.box, truth) > 0.3]
        if faces:
            found += 1
            f = max(faces, key=lambda f: iou(f.box, truth))
            pipe_ok += idx[f.expression] == y
            direct_ok_found += direct
    n = len(ds)
    print(f"{a.spec} ({a.mode}): {n} faces; detector {a.detector} found the face in {found} "
          f"({100 * found / n:.1f} %)")
    print(f"  direct crop accuracy, all faces:        {100 * direct_ok / n:.2f} %")
    print(f"  direct crop accuracy, faces found:      {100 * direct_ok_found / max(1, found):.2f} %")
    print(f"  detector -> crop accuracy, faces found: {100 * pipe_ok / max(1, found):.2f} %")
    print(f"  detector -> crop accuracy, all faces (a miss is wrong): {100 * pipe_ok / n:.2f} %")


if __name__ == "__main__":
    main()
