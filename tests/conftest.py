"""Shared fixtures."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Folder holding the real datasets (``ferplus/``, ...): ``$ROBUSTFER_DATA`` or ../shared/data.
DATA_ROOT = Path(os.environ.get("ROBUSTFER_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data folder, or skip the test when it is absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real data not found at {DATA_ROOT}; set ROBUSTFER_DATA")
    return DATA_ROOT


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster and does not fight a concurrent run for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: Overrides that make a run of recipes/synthetic_quickstart.yaml take a second or two.
QUICK_TRAIN = ["train.progress=false", "data.train_options={size: 32}", "data.eval_options={size: 16}",
               "train.batch_size=16", "train.max_steps_per_epoch=2", "model.options={width: 0.25}",
               "data.eval=[]", "eval.plots=false", "data.num_workers=0"]


@pytest.fixture
def quick_train():
    """``run(out, name, *overrides) -> (exit code, stdout)``: ``robustfer train`` on the synthetic
    quickstart recipe in two tiny steps an epoch (``QUICK_TRAIN``; later overrides win)."""
    import io

    from robustfer.cli import main

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "synthetic_quickstart.yaml")

    def run(out: Path, name: str, *overrides: str) -> tuple[int, str]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["train", "--config", recipe, "--output-dir", str(out), "--name", name,
                         *QUICK_TRAIN, *overrides])
        return code, buf.getvalue()

    return run


@contextlib.contextmanager
def _live_server(app: object) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free localhost port; yields its base URL."""
    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        pytest.fail("server did not start")
    try:
        yield url
    finally:
        srv.should_exit = True
        t.join(timeout=10)


@pytest.fixture(scope="session")
def live_server():
    """``with live_server(app) as url:`` serves a FastAPI app on localhost (needs uvicorn, httpx)."""
    return _live_server
