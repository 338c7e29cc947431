"""Inference speed of the shipped default model and of the whole pipeline, on this CPU.

Measures (medians over repeated runs, after warm-up):

1. per-face classification latency, batch 1, with ONNX Runtime (float32 and the shipped int8
   model, ``ferplus_v2.int8.onnx``) and with PyTorch;
2. batched classification throughput (faces/s), batch 64, the same three ways;
3. the whole pipeline -- decode-free ``Recognizer.predict`` on a 640x480 RGB photo with one face
   (detect + face mesh + align + pose + classify) -- for the default detector with each backend,
   and for its fast and thorough modes and Haar with the int8 model.

Each figure is measured in every one of ``--rounds`` interleaved rounds; the table gives the
median of the round medians and their range (on a shared virtual machine the same call can
take 2-3x longer in one minute than in the next).

Run it on an otherwise idle machine:

    python benchmarks/inference_speed.py [--threads 2] [--repeats 200] [--rounds 5]

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
    from robustfer.export import export_onnx
    from robustfer.runtime.classifier import OnnxClassifier
    from robustfer.inference import HaarDetector, load_image
    from robustfer.inference.recognizer import pretrained_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5, help="repeat everything this many times, interleaved")
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
        ort8 = OnnxClassifier(ckpt.with_suffix(".int8.onnx"), threads=a.threads)
        model = rec.classifier.model

        def torch_run(x: np.ndarray) -> None:
            with torch.inference_mode():
                model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

        # Every measurement runs once per round, rounds interleaved, so that a burst of load
        # on a shared machine hits one round of everything rather than all of one row.
        jobs: list[tuple[str, object, int, bool]] = [
            ("classify 1 face, ONNX Runtime int8 (ms)", lambda: ort8(x1), a.repeats, False),
            ("classify 1 face, ONNX Runtime float32 (ms)", lambda: ort(x1), a.repeats, False),
            ("classify 1 face, PyTorch (ms)", lambda: torch_run(x1), a.repeats, False),
            ("batch 64, ONNX Runtime int8 (faces/s)", lambda: ort8(x64), max(30, a.repeats // 5), True),
            ("batch 64, ONNX Runtime float32 (faces/s)", lambda: ort(x64), max(30, a.repeats // 5), True),
            ("batch 64, PyTorch (faces/s)", lambda: torch_run(x64), max(30, a.repeats // 5), True),
        ]
        n = max(30, a.repeats // 2)
        detectors = [("blazeface", "blazeface (default)"), ("blazeface:fast", "blazeface:fast"),
                     ("blazeface:thorough", "blazeface:thorough"), (HaarDetector(profile="auto"), "haar")]
        for spec, label in detectors:
            for backend in ("onnx-int8", "onnx", "torch") if spec == "blazeface" else ("onnx-int8",):
                r = Recognizer.from_checkpoint(ckpt, backend=backend, onnx_path=None if backend != "onnx" else onnx_path,
                                               detector=spec, threads=a.threads)
                got = r.predict(photo)
                assert len(got) == 1
                jobs.append((f"pipeline 640x480, 1 face, {label}, {backend} (ms)",
                             lambda r=r: r.predict(photo), n, False))
            det = r.detector
            jobs.append((f"  of which detection (+ mesh, pose), {label} (ms)",
                         lambda det=det: det.detect(photo), n, False))
        per_round: dict[str, list[float]] = {name: [] for name, *_ in jobs}
        for _ in range(a.rounds):
            for name, fn, reps, rate in jobs:
                ms = _median_ms(fn, reps)  # type: ignore[arg-type]
                per_round[name].append(64000 / ms if rate else ms)

    print(f"robustfer inference speed, {platform.processor() or platform.machine()}, "
          f"{a.threads} threads, torch {torch.__version__}, opencv {cv2.__version__}")
    print(f"{'':<62} {'median':>8} {'range of the ' + str(a.rounds) + ' round medians':>30}")
    for name, vals in per_round.items():
        print(f"{name:<62} {statistics.median(vals):8.1f} {min(vals):14.1f} - {max(vals):.1f}")


if __name__ == "__main__":
    main()
