"""The figure of the realistic occluders in docs/model_v2.md: each kind drawn on the faces of the
bundled sample photos (public domain), cut by the default front end exactly as inference cuts
them (mesh alignment, 96 px), with evaluation seeds 0-1 (``occlusion_rng(seed, face, occluder)``).

    python benchmarks/occluder_examples.py [--out docs/img/realistic_occluders.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from robustfer.data.occlusion import apply_occluder, occlusion_rng, realistic_occluders
from robustfer.inference import create_detector, load_image
from robustfer.inference.align import align_face

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "realistic_occluders.png"))
    args = ap.parse_args()
    det = create_detector("blazeface")
    faces = []
    for name in ("grace_hopper.jpg", "astronaut.jpg"):
        img = load_image(ROOT / "samples" / name)
        best = max(det.detect(img), key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        faces.append(cv2.cvtColor(align_face(img, best, 96, 1.05, 0.0)[0], cv2.COLOR_RGB2GRAY))
    rows = []
    for seed in (0, 1):
        for i, face in enumerate(faces):
            tiles = [face] + [apply_occluder(face, o, occlusion_rng(seed, i, o)) for o in realistic_occluders()]
            rows.append(np.concatenate(tiles, 1))
    grid = np.concatenate(rows, 0)
    head = np.full((18, grid.shape[1]), 255, np.uint8)
    for j, label in enumerate(["clean"] + [o.name for o in realistic_occluders()]):
        cv2.putText(head, label, (j * 96 + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1, cv2.LINE_AA)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, np.concatenate([head, grid], 0))
    print(args.out)


if __name__ == "__main__":
    main()
