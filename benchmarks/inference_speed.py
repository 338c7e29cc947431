"""Inference speed of the shipped default model and of the whole pipeline, on this CPU.

Measures (medians over repeated runs, after warm-up):

1. per-face classification latency, batch 1, with ONNX Runtime and with PyTorch;
2. batched classification throughput (faces/s), batch 64;
3. the whole pipeline -- decode-free ``Recognizer.predict`` on a 640x480 RGB photo with one face
   (detect + crop/align + pose + classify) -- for each Haar ``profile`` mode.

Run it on an otherwise idle machine:

    python benchmarks/inference_speed.py [--threads 2] [--repeats 200]

The face crop and the photo come from ``samples/grace_hopper.jpg`` (public domain): the photo is
resized to 640 px wide and cut to 640x480 around the face.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn, repeats: int, warmup: int = 5) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def main() -> None:
    import cv2
    import torch

    from robustfer import Recognizer
    from robustfer.export import OnnxClassifier, export_onnx
    from robustfer.inference import HaarDetector, load_image
    from robustfer.inference.recognizer import pretrained_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=200)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)

    photo = load_image(ROOT / "samples" / "grace_hopper.jpg")
    photo = cv2.resize(photo, (640, round(photo.shape[0] * 640 / photo.shape[1])))[60:540]
    assert photo.shape == (480, 640, 3)

    rec = Recognizer.from_pretrained("default")
    faces = rec._crops(photo, detect=True)
    assert len(faces) == 1, f"expected one face in the benchmark photo, found {len(faces)}"
    x1 = rec.face_tensor(faces[0][1])[None]
    x64 = np.repeat(x1, 64, axis=0)

    with tempfile.TemporaryDirectory() as d:
        ckpt = pretrained_path("default")
        onnx_path = ckpt.with_suffix(".onnx")  # shipped next to the weights
        if not onnx_path.is_file():
            onnx_path = export_onnx(ckpt, Path(d) / "default.onnx")
        ort = OnnxClassifier(onnx_path, threads=a.threads)
        model = rec.classifier.model

        def torch_run(x: np.ndarray) -> None:
            with torch.inference_mode():
                model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

        rows = [
            ("classify 1 face, ONNX Runtime (ms)", _median_ms(lambda: ort(x1), a.repeats)),
            ("classify 1 face, PyTorch (ms)", _median_ms(lambda: torch_run(x1), a.repeats)),
        ]
        ms64_ort = _median_ms(lambda: ort(x64), max(30, a.repeats // 5))
        ms64_pt = _median_ms(lambda: torch_run(x64), max(30, a.repeats // 5))
        rows += [("batch 64, ONNX Runtime (faces/s)", 64000 / ms64_ort),
                 ("batch 64, PyTorch (faces/s)", 64000 / ms64_pt)]
        n = max(30, a.repeats // 2)
        for mode in ("always", "auto", "never"):
            for backend in ("onnx", "torch"):
                r = Recognizer.from_checkpoint(onnx_path if backend == "onnx" else ckpt,
                                               detector=HaarDetector(profile=mode), threads=a.threads)
                got = r.predict(photo)
                assert len(got) == 1
                rows.append((f"pipeline 640x480, 1 face, profile={mode}, {backend} (ms)",
                             _median_ms(lambda r=r: r.predict(photo), n)))
            det = HaarDetector(profile=mode)
            rows.append((f"  of which Haar detection, profile={mode} (ms)",
                         _median_ms(lambda det=det: det.detect(photo), n)))

    print(f"robustfer inference speed, {platform.processor() or platform.machine()}, "
          f"{a.threads} threads, torch {torch.__version__}, opencv {cv2.__version__}")
    for name, v in rows:
        print(f"{name:<58} {v:8.1f}")


if __name__ == "__main__":
    main()
