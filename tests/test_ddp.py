"""Two-process DistributedDataParallel training on CPU (gloo), launched with ``torchrun``."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from robustfer.engine.data import EpochSampler

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "synthetic_quickstart.yaml")
TRAIN_SIZE, BATCH, STEPS = 64, 16, 2

# Runs `robustfer.cli.main` like `python -m robustfer.cli`, recording in every rank which
# training samples it loaded and how often it wrote a model checkpoint.
PROBE = textwrap.dedent(
    """
    import atexit, json, os, sys

    from robustfer.cli import main
    from robustfer.data.transforms import TrainTransform
    from robustfer.engine import data, train

    seen, saves = [], []
    get = data.TorchView.__getitem__

    def getitem(self, i):
        if isinstance(self.transform, TrainTransform):
            seen.append(int(i))
        return get(self, i)

    save = train.save_model

    def save_model(*a, **k):
        saves.append(1)
        return save(*a, **k)

    data.TorchView.__getitem__ = getitem
    train.save_model = save_model

    @atexit.register
    def dump():
        path = os.path.join(os.environ["PROBE_DIR"], f"rank{os.environ['RANK']}.json")
        with open(path, "w") as f:
            json.dump({"seen": seen, "saves": len(saves)}, f)

    sys.exit(main(sys.argv[1:]))
    """
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_training_on_cpu(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    out = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(probe),
        "train", "--config", RECIPE, "--output-dir", str(out), "--name", "ddp",
        "train.epochs=1", f"train.max_steps_per_epoch={STEPS}", f"train.batch_size={BATCH}",
        "train.progress=false", "data.num_workers=0", "train.device=cpu",
        f"data.train_options={{size: {TRAIN_SIZE}}}", "data.eval_options={size: 16}",
        "model.options={width: 0.25}", "eval.occluders=none", "eval.plots=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBE_DIR": str(probe_dir)}
    env.pop("ROBUSTFER_DATA", None)
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=180)
    except subprocess.TimeoutExpired as e:  # pragma: no cover - a hung collective
        pytest.fail(f"torchrun timed out:\n{e.stdout}\n{e.stderr}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log

    run = out / "ddp"
    for name in ("best.safetensors", "last.pt", "metrics.csv", "report.json", "config.yaml"):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*.tmp"))
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1]
    assert proc.stdout.count("epoch 1:") == 1  # only rank 0 logs
    assert proc.stdout.count("run folder:") == 1
    report = json.loads((run / "report.json").read_text())
    assert report["results"]["synthetic:test"]["n"] == 16

    probes = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    # only rank 0 writes the model checkpoint: the best epoch's, then again with its temperature
    assert [p["saves"] for p in probes] == [2, 0]
    # each rank trained on its own shard of the epoch's order: disjoint, together all of it
    labels = np.arange(TRAIN_SIZE) % 7  # synthetic labels are i % num_classes
    for rank, p in enumerate(probes):
        sampler = EpochSampler(labels, seed=0, rank=rank, world_size=2)
        sampler.set_epoch(1)
        assert p["seen"] == list(sampler)[: STEPS * BATCH]
    s0, s1 = (set(p["seen"]) for p in probes)
    assert len(s0) == len(s1) == STEPS * BATCH
    assert s0.isdisjoint(s1)
    assert s0 | s1 == set(range(TRAIN_SIZE))
