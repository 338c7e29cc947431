"""ONNX export: dynamic batch, parity with PyTorch on real face crops, the onnx backend."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from robustfer import Recognizer  # noqa: E402
from robustfer.cli import main  # noqa: E402
from robustfer.inference import load_image  # noqa: E402
from robustfer.inference.recognizer import pretrained_path  # noqa: E402
from robustfer.runtime.checkpoint import load_model  # noqa: E402
from robustfer.runtime.classifier import OnnxClassifier  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("onnx")
    ckpt = d / "model.safetensors"
    ckpt.write_bytes(pretrained_path("default").read_bytes())
    assert main(["export", "--checkpoint", str(ckpt)]) == 0
    assert (d / "model.onnx").is_file()
    return d / "model.onnx"


def _real_crops(rec: Recognizer, data_root: Path | None) -> np.ndarray:
    """Face crops from the sample photos (detected) and, where present, FERPlus test images."""
    xs = []
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        for _, crop, _ in rec._crops(load_image(SAMPLES / name), detect=True):
            xs.append(rec.face_tensor(crop))
    if data_root is not None:
        from robustfer.data import build_dataset

        ds = build_dataset("ferplus:test", root=data_root)
        for i in range(0, len(ds), len(ds) // 30):
            xs.append(rec.face_tensor(ds[i][0]))
    return np.stack(xs)


def test_onnx_parity_on_real_faces(exported: Path) -> None:
    from conftest import DATA_ROOT

    rec = Recognizer.from_pretrained("default")
    x = _real_crops(rec, DATA_ROOT if DATA_ROOT.is_dir() else None)
    model, _ = load_model(pretrained_path("default"))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).logits.numpy()
    clf = OnnxClassifier(exported)
    got = clf.logits(x)
    assert np.abs(ref - got).max() <= 1e-4
    for n in (1, 5):  # dynamic batch
        assert np.abs(clf.logits(x[:n]) - ref[:n]).max() <= 1e-4


def test_onnx_backend_in_the_recognizer(exported: Path) -> None:
    torch_rec = Recognizer.from_pretrained("default")
    onnx_rec = Recognizer.from_checkpoint(exported)  # the .onnx file alone carries the metadata
    assert onnx_rec.class_names == torch_rec.class_names
    a = torch_rec.predict(SAMPLES / "grace_hopper.jpg")[0]
    b = onnx_rec.predict(SAMPLES / "grace_hopper.jpg")[0]
    assert a.expression == b.expression
    assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 1e-4
    c = Recognizer.from_checkpoint(exported.with_suffix(".safetensors"), backend="onnx")
    assert c.predict(SAMPLES / "grace_hopper.jpg")[0].expression == a.expression


def test_missing_onnx_file_says_how_to_make_it(tmp_path: Path) -> None:
    from robustfer.errors import ConfigError

    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(pretrained_path("default").read_bytes())
    with pytest.raises(ConfigError, match="robustfer export"):
        Recognizer.from_checkpoint(ckpt, backend="onnx")


def test_shipped_onnx_matches_the_shipped_weights() -> None:
    """The default model's .onnx (for backend='onnx' without onnxscript) is the same model."""
    rec = Recognizer.from_pretrained("default")
    x = _real_crops(rec, None)
    onnx_file = pretrained_path("default").with_suffix(".onnx")
    assert onnx_file.is_file()
    model, _ = load_model(pretrained_path("default"))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).logits.numpy()
    assert np.abs(OnnxClassifier(onnx_file).logits(x) - ref).max() <= 1e-4
    fast = Recognizer.from_pretrained("default", backend="onnx")
    assert fast.predict(SAMPLES / "astronaut.jpg")[0].expression == "happiness"


@pytest.mark.parametrize("name, options", [("ran_compact_cnn", {"width": 0.25, "crop_size": 32}),
                                           ("scan_cci_resnet18", {"width": 0.25})])
def test_attention_models_export_with_parity(tmp_path: Path, name: str, options: dict) -> None:
    """RAN's in-model crops (grid_sample) and SCAN-CCI's patch grid survive ONNX export."""
    from robustfer.data.labels import class_names
    from robustfer.data.transforms import Preprocess
    from robustfer.models import create_model
    from robustfer.runtime.checkpoint import CheckpointMeta, save_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=8, in_chans=1, **options).eval()
    ckpt = tmp_path / f"{name}.safetensors"
    save_model(ckpt, model, CheckpointMeta(name, options, class_names(8), Preprocess(), {}, 0, {}))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["export", "--checkpoint", str(ckpt)]) == 0
    # fixed regions never read landmarks: no warning that the graph ignores them
    assert not [w for w in caught if "landmarks" in str(w.message)]
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        ref = model(x).logits.numpy()
    clf = OnnxClassifier(ckpt.with_suffix(".onnx"))
    assert np.abs(clf.logits(x.numpy()) - ref).max() <= 1e-4
    assert np.abs(clf.logits(x[:1].numpy()) - ref[:1]).max() <= 1e-4


def test_landmark_models_export_says_what_the_graph_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RAN cropping around landmarks cannot take them through the image-only graph: a clear
    error, not a traceback; AHA (landmarks optional) exports with a warning that it crops
    from its template."""
    from robustfer.data.labels import class_names
    from robustfer.data.transforms import Preprocess
    from robustfer.models import create_model
    from robustfer.runtime.checkpoint import CheckpointMeta, save_model

    for name, options in (("ran_compact_cnn", {"width": 0.25, "crop_size": 32, "regions": "landmarks"}),
                          ("aha_compact_cnn", {"width": 0.25})):
        model = create_model(name, num_classes=8, in_chans=1, **options).eval()
        save_model(tmp_path / f"{name}.safetensors", model,
                   CheckpointMeta(name, options, class_names(8), Preprocess(), {}, 0, {}))
    assert main(["export", "--checkpoint", str(tmp_path / "ran_compact_cnn.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported" in err and "regions='fixed'" in err and "PyTorch backend" in err, err
    assert not (tmp_path / "ran_compact_cnn.onnx").exists()
    with pytest.warns(UserWarning, match="fixed template"):
        assert main(["export", "--checkpoint", str(tmp_path / "aha_compact_cnn.safetensors")]) == 0
    assert (tmp_path / "aha_compact_cnn.onnx").is_file()


# ------------------------------------------------------------------ int8 (static quantisation)
def _face_folder(rec: Recognizer, folder: Path, data_root: Path | None) -> Path:
    """Face crops as image files: the samples' detected faces and, with the data, FERPlus train."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        for _, crop, _ in rec._crops(load_image(SAMPLES / name), detect=True):
            Image.fromarray(crop).save(folder / f"face{k}.png")
            k += 1
    if data_root is not None:
        from robustfer.data import build_dataset

        ds = build_dataset("ferplus:train", root=data_root)
        for i in range(0, len(ds), len(ds) // 64):
            Image.fromarray(ds[i][0]).save(folder / f"ferplus{i}.png")
    return folder


def test_int8_export_from_a_folder_of_faces(tmp_path: Path) -> None:
    """`export --int8` writes NAME.int8.onnx with the metadata, and it classifies like fp32."""
    from conftest import DATA_ROOT

    from robustfer.runtime.classifier import meta_from_onnx

    data = DATA_ROOT if DATA_ROOT.is_dir() else None
    rec = Recognizer.from_pretrained("default")
    calib = _face_folder(rec, tmp_path / "calib", data)
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(pretrained_path("default").read_bytes())
    assert main(["export", "--checkpoint", str(ckpt), "--int8", "--calibration", str(calib)]) == 0
    q = tmp_path / "model.int8.onnx"
    assert q.is_file() and q.stat().st_size < 0.4 * (tmp_path / "model.onnx").stat().st_size
    md = OnnxClassifier(q).metadata()
    assert md["quantization"].startswith("int8 static")
    assert meta_from_onnx(q).class_names == rec.class_names
    x = _real_crops(rec, data)
    p32, _ = OnnxClassifier(tmp_path / "model.onnx")(x)
    p8, _ = OnnxClassifier(q)(x)
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.9
    assert np.abs(p8 - p32).mean() < 0.02
    # the Recognizer finds it beside the weights
    r8 = Recognizer.from_checkpoint(ckpt, backend="onnx-int8")
    assert r8.predict(SAMPLES / "astronaut.jpg")[0].expression == "happiness"


def test_int8_needs_calibration_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(pretrained_path("default").read_bytes())
    assert main(["export", "--checkpoint", str(ckpt), "--int8"]) == 2
    assert "--calibration" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--checkpoint", str(ckpt), "--int8", "--calibration", str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
    from robustfer.errors import ConfigError

    with pytest.raises(ConfigError, match="--int8"):
        Recognizer.from_checkpoint(tmp_path / "other.safetensors", backend="onnx-int8")


def test_shipped_int8_model_agrees_with_the_weights() -> None:
    """The shipped default.int8.onnx: same labels as fp32 on real faces, and the backend works."""
    from conftest import DATA_ROOT

    rec = Recognizer.from_pretrained("default")
    x = _real_crops(rec, DATA_ROOT if DATA_ROOT.is_dir() else None)
    q = pretrained_path("default").with_suffix(".int8.onnx")
    assert q.is_file()
    p32, _ = OnnxClassifier(pretrained_path("default").with_suffix(".onnx"))(x)
    p8, _ = OnnxClassifier(q)(x)
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.9
    fast = Recognizer.from_pretrained("default", backend="onnx-int8")
    assert fast.predict(SAMPLES / "astronaut.jpg")[0].expression == "happiness"


def test_evaluate_runs_an_onnx_file_like_its_checkpoint(tmp_path: Path) -> None:
    """`robustfer evaluate --checkpoint X.onnx` measures the exported file through the same engine."""
    import json

    from robustfer.data.labels import class_names
    from robustfer.data.transforms import Preprocess
    from robustfer.models import create_model
    from robustfer.runtime.checkpoint import CheckpointMeta, save_model

    torch.manual_seed(0)
    model = create_model("compact_cnn", num_classes=8, in_chans=1, width=0.25).eval()
    ckpt = tmp_path / "m.safetensors"
    save_model(ckpt, model, CheckpointMeta("compact_cnn", {"width": 0.25}, class_names(8),
                                           Preprocess(), {}, 0, {}))
    assert main(["export", "--checkpoint", str(ckpt)]) == 0
    for f, out in ((ckpt, "ev_torch"), (ckpt.with_suffix(".onnx"), "ev_onnx")):
        assert main(["evaluate", "--checkpoint", str(f), "--data", "synthetic:test",
                     "--occluders", "block:0.3", "--out", str(tmp_path / out), "--no-progress"]) == 0
    a = json.loads((tmp_path / "ev_torch" / "report.json").read_text())["results"]["synthetic:test"]
    b = json.loads((tmp_path / "ev_onnx" / "report.json").read_text())["results"]["synthetic:test"]
    assert a["n"] == b["n"] > 0
    assert a["confusion"] == b["confusion"]
    assert a["occlusion"]["results"] == b["occlusion"]["results"]


# ---------------------------------------------------------------------------------- int8 on every CPU
def _int8_weights(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and np.prod(t.dims) > 1}


def test_shipped_int8_weights_cannot_saturate_on_cpus_without_vnni() -> None:
    """Whatever CPU runs the tests: the shipped int8 weights are 7-bit, so the u8 x s8 kernels of
    AVX2 / AVX-512 CPUs without VNNI (pairs of products summed in saturating int16) cannot
    overflow: 2 * 255 * 64 < 32767. Full-range weights made the old file lose 13 points there."""
    w = _int8_weights(pretrained_path("default").with_suffix(".int8.onnx"))
    assert len(w) >= 5  # every conv and the classifier
    for name, a in w.items():  # reduce_range: symmetric 7-bit, [-64, 64]
        assert int(np.abs(a.astype(np.int32)).max()) <= 64, (name, a.min(), a.max())
    assert 2 * 255 * 64 <= 32767


def test_quantize_defaults_to_the_range_safe_everywhere(tmp_path: Path) -> None:
    from robustfer.export import quantize_onnx

    src = pretrained_path("default").with_suffix(".onnx")
    rng = np.random.default_rng(0)
    calib = rng.normal(0, 0.5, (16, 1, 48, 48)).astype(np.float32)
    safe = quantize_onnx(src, calib, tmp_path / "safe.int8.onnx")
    full = quantize_onnx(src, calib, tmp_path / "full.int8.onnx", reduce_range=False)
    assert max(int(np.abs(a).max()) for a in _int8_weights(safe).values()) <= 64
    assert max(int(np.abs(a).max()) for a in _int8_weights(full).values()) > 64  # the check can fail


def _broken_int8(tmp_path: Path) -> Path:
    """A copy of the shipped model whose int8 file has its classifier's weights scrambled."""
    import onnx
    from onnx import numpy_helper

    base = pretrained_path("default")
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(base.read_bytes())
    ckpt.with_suffix(".onnx").write_bytes(base.with_suffix(".onnx").read_bytes())
    m = onnx.load(str(base.with_suffix(".int8.onnx")))
    rng = np.random.default_rng(0)
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if t.data_type == onnx.TensorProto.INT8 and a.ndim == 2:  # the Gemm weights of the head
            t.CopyFrom(numpy_helper.from_array(rng.permutation(a.reshape(-1)).reshape(a.shape), t.name))
    onnx.save(m, str(tmp_path / "m.int8.onnx"))
    return ckpt


def test_int8_guard_falls_back_to_float32_on_a_broken_file(tmp_path: Path) -> None:
    from robustfer.runtime.classifier import check_int8, float_sibling

    ckpt = _broken_int8(tmp_path)
    with pytest.warns(RuntimeWarning, match="disagrees with its float32 model on this CPU"):
        rec = Recognizer.from_checkpoint(ckpt, backend="onnx-int8")
    assert rec.classifier.path == ckpt.with_suffix(".onnx")  # the float32 file runs
    res = check_int8(OnnxClassifier(ckpt.with_suffix(".int8.onnx")), rec.preprocess)
    assert res["ok"] is False and res["agreement"] < 0.9
    assert float_sibling(tmp_path / "m.int8.onnx") == ckpt.with_suffix(".onnx")
    # opting out runs the file as it is
    raw = Recognizer.from_checkpoint(ckpt, backend="onnx-int8", check_int8=False)
    assert raw.classifier.path == ckpt.with_suffix(".int8.onnx")


def test_int8_guard_keeps_a_good_file(recwarn: pytest.WarningsRecorder) -> None:
    from robustfer.runtime.classifier import check_int8

    rec = Recognizer.from_pretrained("default", backend="onnx-int8")
    assert rec.classifier.path.name.endswith(".int8.onnx")
    res = check_int8(rec.classifier, rec.preprocess)
    assert res["ok"] and res["agreement"] >= 0.95, res
    assert not [w for w in recwarn if "int8" in str(w.message)]


QEMU = shutil.which("qemu-x86_64")


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64 (apt-get install qemu-user) to emulate an AVX2-only CPU")
def test_shipped_int8_is_identical_on_an_emulated_avx2_only_cpu(tmp_path: Path) -> None:
    """ONNX Runtime picks its integer kernels by CPU and cannot be told to use the AVX2 ones, so
    the test runs it under qemu's user-mode emulation of a Haswell CPU (AVX2, no AVX-512, no
    VNNI): the shipped int8 model gives bit-identical logits there and on this CPU."""
    from robustfer.runtime.classifier import reference_faces

    rec = Recognizer.from_pretrained("default", backend="onnx-int8", check_int8=False)
    x = reference_faces(rec.preprocess, n=32)
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, sys; from robustfer.runtime.classifier import OnnxClassifier; "
            f"np.save({str(tmp_path / 'y.npy')!r}, OnnxClassifier({str(rec.classifier.path)!r}, threads=1)"
            f".logits(np.load({str(tmp_path / 'x.npy')!r})))")
    r = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    here = OnnxClassifier(rec.classifier.path, threads=1).logits(x)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), here)


def test_shipped_metadata_holds_no_absolute_path() -> None:
    """The shipped files' metadata speaks of the product: no path of the machine they were made on."""
    import re

    from robustfer.runtime.checkpoint import read_meta

    st = pretrained_path("default")
    texts = [json.dumps(read_meta(st).to_strings())]
    for f in (st.with_suffix(".onnx"), st.with_suffix(".int8.onnx")):
        texts.append(json.dumps(OnnxClassifier(f).metadata()))
    for t in texts:
        assert not re.search(r'"/(work|root|home|tmp|Users)\b', t.replace("\\\\", "")), t[:300]
        assert "model_name" in t
