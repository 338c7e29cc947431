"""Measure where FER2013 crops put the face, for Preprocess.crop_scale and align.FER_EYES.

On 1,500 random FER2013Train faces (seed 0), each padded by 16 px (replicated border: the face
touches the crop edges) and upscaled 4x:

1. the Haar frontal cascade box (HaarDetector, scale factor 1.15 as when measured): median crop
   side / box side -> ``crop_scale``; centre offsets -> ``crop_shift``;
2. with ``--landmarks``, dlib's 5-point eye centres in crop units -> ``FER_EYES``;
3. with ``--mesh OUT.npy``, the default detector's 468-point face mesh on the faces it finds
   with |yaw| and |pitch| < 15 degrees: the median position of each point in crop units ->
   the template that :func:`robustfer.inference.align.align_face` fits a face's mesh to
   (``robustfer/weights/face/fer_mesh_template.npy``).

    python benchmarks/calibrate_face_crop.py --data-root ../shared/data [--landmarks] [--mesh OUT.npy]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import cv2

    from robustfer.data import build_dataset
    from robustfer.inference.detect import DlibDetector, HaarDetector

    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default=None)
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--landmarks", action="store_true", help="also measure dlib eye centres")
    p.add_argument("--mesh", help="write the frontal-face mesh template (468 x 2, crop units) here")
    a = p.parse_args()
    if a.mesh:
        return mesh_template(a.data_root, a.n, a.mesh)
    ds = build_dataset("ferplus:train", root=a.data_root)
    idx = np.random.default_rng(0).choice(len(ds), a.n, replace=False)
    pad = 16
    haar = HaarDetector(max_side=10000, min_face=0.2, scale_factor=1.15)
    dl = DlibDetector(upsample=0) if a.landmarks else None
    boxes, eyes = [], []
    for i in idx:
        img = ds[int(i)][0]
        big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        rgb = cv2.resize(np.repeat(big[:, :, None], 3, 2), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        d = [x for x in haar.detect(rgb) if x.view == "frontal"]
        if d:
            b = [v / 4 - pad for v in max(d, key=lambda x: x.width * x.height).box]
            side = ((b[2] - b[0]) + (b[3] - b[1])) / 2
            boxes.append((48 / side, (24 - (b[1] + b[3]) / 2) / side, (24 - (b[0] + b[2]) / 2) / side))
        if dl is not None:
            e = dl.detect(rgb)
            if e:
                eyes.append((e[0].landmarks[:2] / 4 - pad) / 48)
    r = np.array(boxes)
    print(f"Haar frontal box found in {len(r)} of {a.n}")
    for name, col in zip(["crop_scale (crop side / box side)", "crop_shift (y, box heights)",
                          "x offset (box widths)"], r.T):
        print(f"  {name}: median {np.median(col):.3f}, IQR {np.percentile(col, 25):.3f}-{np.percentile(col, 75):.3f}")
    if eyes:
        e = np.array(eyes)
        print(f"dlib eyes found in {len(e)} of {a.n}; median (x, y) in crop units:")
        print("  image-left eye", np.round(np.median(e[:, 0], 0), 4), " image-right eye", np.round(np.median(e[:, 1], 0), 4))


def mesh_template(root: str | None, n: int, out: str) -> None:
    import cv2

    from robustfer.data import build_dataset
    from robustfer.inference.blazeface import BlazeFaceDetector

    ds = build_dataset("ferplus:train", root=root)
    idx = np.random.default_rng(0).choice(len(ds), n, replace=False)
    pad, up = 16, 4
    det = BlazeFaceDetector()
    meshes, found = [], 0
    for i in idx:
        img = ds[int(i)][0]
        big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        rgb = cv2.resize(np.repeat(big[:, :, None], 3, 2), None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
        d = det.detect(rgb)
        if not d:
            continue
        found += 1
        f = max(d, key=lambda x: x.width * x.height)
        yaw, pitch, _ = f.extra["pose"]
        if abs(yaw) < 15 and abs(pitch) < 15:
            meshes.append((f.extra["mesh"][:, :2] / up - pad) / 48)
    t = np.median(np.array(meshes), 0).astype(np.float32)
    np.save(out, t)
    print(f"faces found {found} of {n}; frontal (|yaw|, |pitch| < 15) {len(meshes)}; template -> {out}")
    print("  eye centres", np.round(t[[33, 133, 159, 145]].mean(0), 4), np.round(t[[263, 362, 386, 374]].mean(0), 4),
          " extent", np.round(t.min(0), 3), np.round(t.max(0), 3))


if __name__ == "__main__":
    main()
