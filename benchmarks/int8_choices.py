"""Which int8 quantisation of the shipped model is right on every x86 CPU, and how fast it is.

Three steps (the numbers in docs/inference.md, "int8 that is right on every x86 CPU"):

    python benchmarks/int8_choices.py make --data-root ../shared/data --out int8_study
    python benchmarks/int8_choices.py logits --out int8_study --tag host
    qemu-x86_64 -cpu Haswell $(python -c 'import sys; print(sys.executable)') \\
        benchmarks/int8_choices.py logits --out int8_study --tag avx2 --int8-only
    python benchmarks/int8_choices.py report --out int8_study

``make`` quantises the shipped float32 ONNX file in each way (activations x weights, per-channel
or per-tensor, 8- or 7-bit weights) with the same 1,024 FER2013Train calibration crops (seed 0)
and caches the first ``--n`` FER2013Valid faces (majority labels; select on validation, never on
test). ``logits`` runs every file on them with ONNX Runtime and saves the logits under a tag;
under qemu's emulation of an AVX2-only CPU (``apt-get install qemu-user``) it exercises ONNX
Runtime's AVX2 kernels (emulated float32 is very slow, hence ``--int8-only``: the float32
reference is the host's). ``report`` prints accuracy and agreement with float32 per tag, whether
each file's logits are identical across tags, and batch-1 / batch-64 speed on this CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

VARIANTS = {  # name: (activations, weights, per_channel, reduce_range)
    "u8s8_8bit": ("QUInt8", "QInt8", True, False),
    "s8s8_8bit": ("QInt8", "QInt8", True, False),
    "u8s8_tensor_8bit": ("QUInt8", "QInt8", False, False),
    "u8u8": ("QUInt8", "QUInt8", True, False),
    "u8s8_tensor_7bit": ("QUInt8", "QInt8", False, True),
    "u8s8_7bit": ("QUInt8", "QInt8", True, True),
}


def float_model() -> Path:
    from robustfer.runtime.weights import pretrained_path

    return pretrained_path("default").with_suffix(".onnx")


def make(out: Path, data_root: str | None, n: int) -> None:
    import onnxruntime.quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from robustfer.data import build_dataset
    from robustfer.data.preprocess import preprocess_face
    from robustfer.export import calibration_crops
    from robustfer.runtime.classifier import meta_from_onnx

    out.mkdir(parents=True, exist_ok=True)
    pre = meta_from_onnx(float_model()).preprocess
    ds = build_dataset("ferplus:valid", root=data_root, label_mode="majority")
    idx = range(min(n, len(ds)))
    x = np.stack([preprocess_face(ds[i][0], pre) for i in idx]).astype(np.float32)
    np.savez(out / "valid.npz", x=x, y=np.array([ds.samples[i].label for i in idx]))
    cal = calibration_crops("ferplus:train", data_root, pre, n=1024, seed=0)
    quant_pre_process(str(float_model()), str(out / "pre.onnx"))
    for name, (act, w, per_channel, reduce_range) in VARIANTS.items():
        batches = iter([{"input": cal[i:i + 64]} for i in range(0, len(cal), 64)])

        class Reader(q.CalibrationDataReader):  # type: ignore[misc]
            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(batches, None)

        q.quantize_static(str(out / "pre.onnx"), str(out / f"{name}.onnx"), Reader(),
                          quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
                          reduce_range=reduce_range, activation_type=getattr(q.QuantType, act),
                          weight_type=getattr(q.QuantType, w), calibrate_method=q.CalibrationMethod.MinMax)
        print("wrote", out / f"{name}.onnx")


def files(out: Path, int8_only: bool = False) -> dict[str, Path]:
    got = {name: out / f"{name}.onnx" for name in VARIANTS}
    return got if int8_only else {"float32": float_model(), **got}


def logits(out: Path, tag: str, int8_only: bool) -> None:
    from robustfer.runtime.classifier import OnnxClassifier

    x = np.load(out / "valid.npz")["x"]
    for name, f in files(out, int8_only).items():
        clf = OnnxClassifier(f, threads=int(os.environ.get("THREADS", "1")))
        np.save(out / f"logits_{tag}_{name}.npy", np.concatenate([clf.logits(x[i:i + 256])
                                                                   for i in range(0, len(x), 256)]))
        print("logits", tag, name, flush=True)


def report(out: Path, threads: int) -> None:
    from robustfer.runtime.classifier import OnnxClassifier, softmax

    d = np.load(out / "valid.npz")
    x, y = d["x"], d["y"]
    ref = np.load(out / "logits_host_float32.npy")
    tags = sorted({p.name.split("_")[1] for p in out.glob("logits_*_*.npy")})
    print(f"{len(y)} FER2013Valid faces; float32 accuracy {100 * (ref.argmax(1) == y).mean():.2f} %")
    for name, f in files(out).items():
        cols = []
        runs = {t: np.load(out / f"logits_{t}_{name}.npy") for t in tags
                if (out / f"logits_{t}_{name}.npy").is_file()}
        for t, lg in runs.items():
            cols.append(f"{t}: acc {100 * (lg.argmax(1) == y).mean():.2f} agree "
                        f"{100 * (lg.argmax(1) == ref.argmax(1)).mean():.1f} mean|dp| "
                        f"{np.abs(softmax(lg) - softmax(ref)).mean():.4f}")
        same = len(runs) > 1 and all(np.array_equal(v, runs["host"]) for v in runs.values())
        clf = OnnxClassifier(f, threads=threads)
        for i in range(20):  # warm-up
            clf.logits(x[i:i + 1])
        t1 = []
        for i in range(300):
            t0 = time.perf_counter()
            clf.logits(x[i % len(x):i % len(x) + 1])
            t1.append(time.perf_counter() - t0)
        t64 = []
        for _ in range(30):
            t0 = time.perf_counter()
            clf.logits(x[:64])
            t64.append(time.perf_counter() - t0)
        print(f"{name:18s} {' | '.join(cols)} | identical across CPUs: {same} | batch1 "
              f"{1000 * statistics.median(t1):.2f} ms, batch64 {64 / statistics.median(t64):.0f} faces/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["make", "logits", "report"])
    ap.add_argument("--out", type=Path, default=Path("int8_study"))
    ap.add_argument("--data-root")
    ap.add_argument("--n", type=int, default=500, help="FER2013Valid faces (the first N)")
    ap.add_argument("--tag", default="host")
    ap.add_argument("--int8-only", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.step == "make":
        make(a.out, a.data_root, a.n)
    elif a.step == "logits":
        logits(a.out, a.tag, a.int8_only)
    else:
        report(a.out, a.threads)


if __name__ == "__main__":
    main()
