"""benchmarks/serve_load.py with tiny counts: a real ``robustfer serve`` process under load and faults."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
    pytest.skip("the web service needs python-multipart", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


@pytest.mark.slow
def test_load_benchmark_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "serve_load", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    out = tmp_path / "load.json"
    rc = module.main(["--clients", "1", "2", "--requests-per-level", "6", "--warmup", "2", "--soak", "30",
                      "--soak-clients", "2", "--rss-every", "10", "--fault-rounds", "1",
                      "--slowloris-seconds", "3", "--workers", "1", "--queue", "4", "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0, res["problems"]
    assert [lv["clients"] for lv in res["levels"]] == [1, 2]
    assert all(lv["requests"] == 6 and lv["status"]["200"] >= 1 for lv in res["levels"])
    assert res["crashes"] == 0 and res["hung"] == 0
    assert res["verdict"].startswith("zero crashes, zero hung requests")
    faults = res["faults"]["bad_requests"]
    assert len(faults) >= 10 and {"50 MB body", "pixel bomb PNG 50000x50000", "zero-byte file"} <= {
        f["fault"] for f in faults}
    for f in faults:
        assert 400 <= f["status"] < 500 and f["detail"], f
    assert next(f for f in faults if f["fault"] == "50 MB body")["status"] == 413
    slow = res["faults"]["slowloris"]
    assert slow["ok"] and slow["served_meanwhile"] > 0, slow
    soak = res["soak"]
    assert soak["requests"] == 30 and soak["rss_baseline_mb"] and soak["rss_ok"]
    assert res["end"]["alive"] and res["end"]["health"]["ok"] and res["end"]["shutdown"]["clean"]
