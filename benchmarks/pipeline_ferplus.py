"""The whole pipeline on FERPlus test faces presented as small photos (a check, not a benchmark).

Each 48-px FER2013Test face is padded by 16 px (replicated border, as the face touches the
crop's edges), upscaled 4x to a 320x320 image and passed through ``Recognizer.predict`` with the
default Haar detector, like a user's photo. Reported: how often a face is found, and accuracy
(official majority labels) of the detected-and-recrop path against classifying the original
crop directly (``detect=False``), on the same images. This measures what the face front end
(detector box -> crop with the model's ``crop_scale``) costs relative to the dataset's own crops.

    python benchmarks/pipeline_ferplus.py --data-root ../shared/data [--spec ferplus:test]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import cv2

    from robustfer import Recognizer
    from robustfer.data import build_dataset

    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default=None)
    p.add_argument("--spec", default="ferplus:test")
    p.add_argument("--detector", default="haar")
    a = p.parse_args()
    ds = build_dataset(a.spec, root=a.data_root)
    rec = Recognizer.from_pretrained("default", detector=a.detector)
    idx = {n: i for i, n in enumerate(rec.class_names)}
    found = direct_ok = pipe_ok = direct_ok_found = 0
    for i in range(len(ds)):
        img, s = ds[i]
        y = s.label
        d = rec.predict(img, detect=False)[0]
        direct = idx[d.expression] == y
        direct_ok += direct
        photo = cv2.resize(cv2.copyMakeBorder(img, 16, 16, 16, 16, cv2.BORDER_REPLICATE), None,
                           fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        faces = rec.predict(photo)
        if faces:
            found += 1
            f = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            pipe_ok += idx[f.expression] == y
            direct_ok_found += direct
    n = len(ds)
    print(f"{a.spec}: {n} faces; detector {a.detector} found a face in {found} ({100 * found / n:.1f} %)")
    print(f"  direct crop accuracy, all faces:        {100 * direct_ok / n:.2f} %")
    print(f"  direct crop accuracy, faces found:      {100 * direct_ok_found / max(1, found):.2f} %")
    print(f"  detector -> crop accuracy, faces found: {100 * pipe_ok / max(1, found):.2f} %")


if __name__ == "__main__":
    main()
