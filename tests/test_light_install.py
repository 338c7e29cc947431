"""The light install: the application path works without PyTorch and the training stack.

A child Python in which importing torch, albumentations, matplotlib, scikit-learn, onnx or
onnxscript fails (as in an environment where they were never installed) runs the shipped
model through the Recognizer and the CLI; its probabilities match the PyTorch backend's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
BLOCKED = ("torch", "albumentations", "matplotlib", "sklearn", "onnx", "onnxscript")

BLOCKER = f"""
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def run_without_torch(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_the_blocker_blocks() -> None:
    r = run_without_torch("import torch")
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr


def test_import_does_not_load_torch() -> None:
    r = subprocess.run([sys.executable, "-c", "import sys; from robustfer import Recognizer; "
                        "from robustfer.inference import Recognizer as R; import robustfer.runtime.classifier; "
                        "print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (BLOCKED,)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_recognizer_without_torch_matches_the_torch_backend() -> None:
    files = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    assert files
    r = run_without_torch(f"""
import json, sys
from robustfer import Recognizer
rec = Recognizer.from_pretrained("default")
out = {{"classifier": type(rec.classifier).__name__,
        "faces": [[f.probabilities for f in rec.predict(p)] for p in {files!r}],
        "crops": [f.probabilities for f in rec.predict({files!r}[0], detect=False)],
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})}}
print(json.dumps(out))
""")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["classifier"] == "OnnxClassifier" and got["loaded"] == []

    pytest.importorskip("torch")
    from robustfer import Recognizer

    ref = Recognizer.from_pretrained("default", backend="torch")
    want = [[f.probabilities for f in ref.predict(p)] for p in files]
    assert [len(x) for x in got["faces"]] == [len(x) for x in want]
    assert sum(len(x) for x in want) >= 3  # a face in each sample photo
    for g_faces, w_faces in zip(got["faces"], want):
        for g, w in zip(g_faces, w_faces):
            assert list(g) == list(w)
            np.testing.assert_allclose(list(g.values()), list(w.values()), atol=1e-4, rtol=0)
    w_crop = ref.predict(files[0], detect=False)[0].probabilities
    np.testing.assert_allclose(list(got["crops"][0].values()), list(w_crop.values()), atol=1e-4, rtol=0)


def test_cli_predict_without_torch(tmp_path: Path) -> None:
    out = tmp_path / "faces.jsonl"
    r = run_without_torch(f"""
from robustfer.cli import main
raise SystemExit(main(["predict", {str(SAMPLES)!r}, "-o", {str(out)!r}, "--annotate", {str(tmp_path / 'ann')!r}]))
""")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(len(x["faces"]) for x in rows) >= 3
    assert len(list((tmp_path / "ann").iterdir())) >= 3


def test_training_without_torch_says_what_to_install() -> None:
    r = run_without_torch("""
from robustfer.cli import main
raise SystemExit(main(["predict", "x.jpg", "--backend", "torch"]))
""")
    assert r.returncode == 2 and "robustfer[train]" in r.stderr, r.stderr
    r = run_without_torch("""
from robustfer.cli import main
raise SystemExit(main(["train", "--config", "recipes/synthetic_quickstart.yaml"]))
""", cwd=SAMPLES.parent)
    assert r.returncode == 2 and "robustfer[train]" in r.stderr, r.stderr
