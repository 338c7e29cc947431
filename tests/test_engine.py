"""The training engine end to end on the generated ``synthetic`` dataset (no files needed).

Runs are tiny (at most 64 training images and a few steps per epoch) so that each test takes
seconds on a CPU.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustfer.cli import main
from robustfer.engine import train as train_mod
from robustfer.engine.checkpoint import save_training_state
from robustfer.engine.config import load_config
from robustfer.engine.data import EpochSampler, build_train_val, stratified_split
from robustfer.engine.evaluate import cpu_name
from robustfer.errors import ConfigError
from robustfer.runtime.checkpoint import atomic_write, load_model

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "synthetic_quickstart.yaml")
TINY = ["train.progress=false", "data.train_options={size: 64}", "data.eval_options={size: 48}"]
# smaller still for the tests that train several times: 32 images, one step of 16 per epoch
# (the sampler's epoch order decides which half), a thin model
FAST = ["train.progress=false", "data.train_options={size: 32}", "data.eval_options={size: 16}",
        "train.batch_size=16", "train.max_steps_per_epoch=1", "model.options={width: 0.25}"]
NO_EVAL = ["data.eval=[]", "eval.plots=false", "data.num_workers=0"]


def train_cli(out: Path, name: str, *overrides: str, size: list[str] = FAST) -> int:
    # options before the overrides: argparse does not take positionals after them
    return main(["train", "--config", RECIPE, "--output-dir", str(out), "--name", name,
                 *size, *overrides])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = train_cli(out, "e2e", "train.epochs=2", "train.max_steps_per_epoch=3",
                       "eval.occluders=block:0.3,eye_band", size=TINY)
    return {"rc": rc, "dir": out / "e2e", "log": buf.getvalue()}


def test_train_end_to_end_writes_run_folder(e2e_run):
    assert e2e_run["rc"] == 0, e2e_run["log"]
    run = e2e_run["dir"]
    for name in ("best.safetensors", "last.pt", "metrics.csv", "metrics.jsonl", "report.json",
                 "config.yaml", "confusion.png"):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*.tmp")), "atomic writes left temporary files behind"

    rows = read_csv(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    jl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in jl] == [1, 2]
    assert jl[0]["train_loss"] == pytest.approx(float(rows[0]["train_loss"]))

    report = json.loads((run / "report.json").read_text())
    res = report["results"]["synthetic:test"]
    assert res["n"] == 48
    assert 0.0 <= res["accuracy"] <= 1.0
    assert np.array(res["confusion"]).sum() == 48
    occ = res["occlusion"]["results"]
    assert set(occ) == {"block30", "eye_band"}
    assert all(o["n"] == 48 for o in occ.values())
    assert report["best_epoch"] in (1, 2)
    assert report["selected_on"] == "synthetic:valid"
    assert report["hardware"]["processor"] == cpu_name()  # the CPU model, where it can be read

    cfg = load_config(run / "config.yaml")  # the written config is a valid recipe
    assert cfg.train.epochs == 2 and cfg.data.train_options == {"size": 64}
    assert cfg.eval.occluders == "block:0.3,eye_band"


def test_checkpoint_reloads_alone(e2e_run):
    run = e2e_run["dir"]
    model, meta = load_model(run / "best.safetensors")
    assert not model.training
    assert meta.model_name == "compact_cnn"
    assert meta.class_names == ("neutral", "happiness", "surprise", "sadness", "anger",
                                "disgust", "fear")
    assert meta.preprocess.input_size == 48 and meta.preprocess.in_chans == 1
    assert meta.config["train"]["epochs"] == 2
    assert meta.config["data"]["eval"] == ["synthetic:test"]
    assert meta.epoch == json.loads((run / "report.json").read_text())["best_epoch"]
    assert set(meta.metrics) >= {"val_accuracy", "val_mean_class_accuracy", "val_macro_f1"}
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 48, 48))
    assert out.logits.shape == (2, 7)
    # a run folder and the training state reload too
    m2, _ = load_model(run)
    _, meta3 = load_model(run / "last.pt")
    assert meta3.epoch == 2
    for (k, v), v2 in zip(model.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v, v2), k


def test_evaluate_reproduces_training_report(e2e_run, tmp_path, capsys):
    run = e2e_run["dir"]
    rc = main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--out",
               str(tmp_path / "ev"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    new = json.loads((tmp_path / "ev" / "report.json").read_text())["results"]["synthetic:test"]
    old = json.loads((run / "report.json").read_text())["results"]["synthetic:test"]
    assert new["accuracy"] == old["accuracy"]
    assert new["confusion"] == old["confusion"]
    assert new["macro_f1"] == old["macro_f1"]
    assert new["occlusion"] == old["occlusion"]
    assert new["calibration"] == old["calibration"]  # the stored temperature is applied again
    assert (tmp_path / "ev" / "confusion.png").is_file()


def test_training_fits_a_temperature_on_validation_and_reports_ece(e2e_run):
    run = e2e_run["dir"]
    _, meta = load_model(run / "best.safetensors")
    report = json.loads((run / "report.json").read_text())
    assert meta.temperature > 0 and report["temperature"] == meta.temperature
    assert report["temperature_fitted_on"] == "synthetic:valid"
    cal = report["results"]["synthetic:test"]["calibration"]
    assert cal["temperature"] == meta.temperature
    assert 0.0 <= cal["ece"] <= 1.0 and 0.0 <= cal["ece_before"] <= 1.0
    assert sum(b["count"] for b in cal["bins"]) == 48
    assert (run / "reliability.png").is_file()
    assert "temperature" in e2e_run["log"]


def test_calibrate_command_refuses_test_and_writes_the_temperature(e2e_run, tmp_path, capsys):
    run = e2e_run["dir"]
    out = tmp_path / "cal.safetensors"
    assert main(["calibrate", "--checkpoint", str(run), "--data", "synthetic:test", "--no-progress"]) == 2
    assert "test split" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(run), "--out", str(out), "--no-progress"]) == 0
    assert "fitted on synthetic:valid" in capsys.readouterr().out
    _, meta = load_model(out)
    _, orig = load_model(run / "best.safetensors")
    assert meta.temperature == pytest.approx(orig.temperature, rel=1e-4)  # same split, same fit
    # the runtime applies it: probabilities are softmax(logits / T)
    from robustfer.runtime.classifier import load_classifier, softmax

    clf, m = load_classifier(out, backend="torch")
    x = np.random.default_rng(0).normal(size=(3, 1, 48, 48)).astype(np.float32)
    logits, _ = clf.logits(x)
    np.testing.assert_allclose(clf(x)[0], softmax(logits / m.temperature), atol=1e-6)


# ------------------------------------------------------------------ resume
def _row(rows, epoch):
    (r,) = [r for r in rows if int(r["epoch"]) == epoch]
    return r


_COMPARE = ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def test_resume_after_extending_epochs_matches_uninterrupted_run(tmp_path, capsys):
    # With a cosine schedule the LR of epochs 1-2 depends on train.epochs, so a 2-epoch run
    # extended to 3 cannot equal a 3-epoch run; without a decaying schedule it must.
    extra = [*NO_EVAL, "optim.scheduler=none"]
    assert train_cli(tmp_path / "a", "r", "train.epochs=2", *extra) == 0
    capsys.readouterr()
    assert train_cli(tmp_path / "a", "r", "train.epochs=3", *extra) == 0
    log = capsys.readouterr().out
    assert "resumed" in log and "after epoch 2" in log
    assert "epoch 1:" not in log and "epoch 3:" in log
    assert train_cli(tmp_path / "b", "r", "train.epochs=3", *extra) == 0

    resumed = read_csv(tmp_path / "a" / "r" / "metrics.csv")
    scratch = read_csv(tmp_path / "b" / "r" / "metrics.csv")
    assert [int(r["epoch"]) for r in resumed] == [1, 2, 3]
    assert len((tmp_path / "a" / "r" / "metrics.jsonl").read_text().splitlines()) == 3
    for epoch in (1, 2, 3):
        for k in _COMPARE:
            assert _row(resumed, epoch)[k] == _row(scratch, epoch)[k], (epoch, k)


def test_resume_refuses_a_changed_recipe(tmp_path, capsys):
    """last.pt trained with lr 3e-3 is not continued under lr 1e-3: the error names the key."""
    assert train_cli(tmp_path, "r", "train.epochs=1", *NO_EVAL) == 0
    before = (tmp_path / "r" / "config.yaml").read_text()
    capsys.readouterr()
    assert train_cli(tmp_path, "r", "train.epochs=2", "optim.lr=0.001", *NO_EVAL) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "--name" in err and "train.resume=false" in err, err
    assert (tmp_path / "r" / "config.yaml").read_text() == before  # the run folder is untouched
    assert len(read_csv(tmp_path / "r" / "metrics.csv")) == 1
    # settings that do not change what is trained may differ
    assert train_cli(tmp_path, "r", "train.epochs=2", "train.threads=1", "data.num_workers=0",
                     *NO_EVAL) == 0
    assert "resumed" in capsys.readouterr().out
    # and train.resume=false starts afresh under the new recipe
    assert train_cli(tmp_path, "r", "train.epochs=1", "optim.lr=0.001", "train.resume=false",
                     *NO_EVAL) == 0
    assert len(read_csv(tmp_path / "r" / "metrics.csv")) == 1


@pytest.fixture(scope="module")
def scratch3(tmp_path_factory):
    """An uninterrupted 3-epoch run, the reference for the interrupted ones."""
    out = tmp_path_factory.mktemp("scratch")
    with contextlib.redirect_stdout(io.StringIO()):
        assert train_cli(out, "r", "train.epochs=3", *NO_EVAL) == 0
    return out / "r"


@pytest.mark.parametrize("save_first", [True, False], ids=["killed-after-save", "killed-before-save"])
def test_resume_after_interruption_is_exact(tmp_path, capsys, monkeypatch, save_first, scratch3):
    """A 3-epoch run killed after epoch 2 and run again equals an uninterrupted run.

    ``killed-before-save``: the kill lands after epoch 2 was logged but before ``last.pt``
    was replaced, so the resumed run repeats epoch 2 and must not log it twice.
    """
    real_save = train_mod.save_training_state

    def save_then_die(path, state):
        if state["epoch"] == 2:
            if save_first:
                real_save(path, state)
            raise KeyboardInterrupt
        real_save(path, state)

    monkeypatch.setattr(train_mod, "save_training_state", save_then_die)
    assert train_cli(tmp_path / "a", "r", "train.epochs=3", *NO_EVAL) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(train_mod, "save_training_state", real_save)

    assert train_cli(tmp_path / "a", "r", "train.epochs=3", *NO_EVAL) == 0
    assert f"resumed from {tmp_path / 'a' / 'r' / 'last.pt'} after epoch {2 if save_first else 1}" \
        in capsys.readouterr().out

    resumed = read_csv(tmp_path / "a" / "r" / "metrics.csv")
    scratch = read_csv(scratch3 / "metrics.csv")
    assert [int(r["epoch"]) for r in resumed] == [1, 2, 3]
    jl = [json.loads(x) for x in (tmp_path / "a" / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in jl] == [1, 2, 3]
    for k in _COMPARE:
        assert _row(resumed, 3)[k] == _row(scratch, 3)[k], k
    wa, _ = load_model(tmp_path / "a" / "r" / "last.pt")
    wb, _ = load_model(scratch3 / "last.pt")
    for (k, v), v2 in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.equal(v, v2), k


def test_a_resumed_runs_wall_time_counts_its_interrupted_part(tmp_path, capsys, monkeypatch):
    """``train_wall_seconds`` covers the whole run, not the resumed process alone."""
    real_save = train_mod.save_training_state
    saved: dict = {}

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == 1:
            saved.update(state)
            raise KeyboardInterrupt

    evals = ["data.eval=[synthetic:test]", "eval.plots=false", "data.num_workers=0", "eval.occluders=none"]
    monkeypatch.setattr(train_mod, "save_training_state", save_then_die)
    assert train_cli(tmp_path, "r", "train.epochs=2", *evals) == 130
    monkeypatch.setattr(train_mod, "save_training_state", real_save)
    assert saved["wall_seconds"] > 0 and saved["resumes"] == 0
    # the interrupted part, made long enough that the resumed process alone cannot account for it
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=False)
    state["wall_seconds"] = 1000.0
    torch.save(state, tmp_path / "r" / "last.pt")
    assert train_cli(tmp_path, "r", "train.epochs=2", *evals) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert 1000.0 < report["train_wall_seconds"] < 1000.0 + 600 and report["resumes"] == 1
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=False)["resumes"] == 1


def test_resume_mid_epoch_is_exact(tmp_path, capsys, monkeypatch):
    """A run killed inside epoch 2, after a mid-epoch save, resumes after the last saved batch
    (not at the epoch's start) and ends exactly like an uninterrupted run: the same weights,
    the same per-epoch losses (the interrupted epoch's sums are carried over)."""
    # 4 steps of 8 per epoch; checkpoint_minutes tiny: a mid-epoch save after every step
    steps = [*NO_EVAL, "train.max_steps_per_epoch=null", "train.batch_size=8", "train.epochs=2"]
    assert train_cli(tmp_path / "b", "r", *steps) == 0
    real_save = train_mod.save_training_state
    saved: list[tuple[int, int | None]] = []

    def save_then_die(path, state):
        real_save(path, state)
        part = state.get("partial")
        saved.append((state["epoch"], part and part["step"]))
        if part and part["epoch"] == 2 and part["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_training_state", save_then_die)
    assert train_cli(tmp_path / "a", "r", *steps, "train.checkpoint_minutes=1e-9") == 130
    assert saved == [(0, 1), (0, 2), (0, 3), (1, None), (1, 1), (1, 2)], saved
    assert "run the same command again" in capsys.readouterr().err
    monkeypatch.setattr(train_mod, "save_training_state", real_save)

    assert train_cli(tmp_path / "a", "r", *steps) == 0  # checkpoint_minutes may change on resume
    assert "after step 2/4 of epoch 2" in capsys.readouterr().out
    resumed = read_csv(tmp_path / "a" / "r" / "metrics.csv")
    scratch = read_csv(tmp_path / "b" / "r" / "metrics.csv")
    assert [int(r["epoch"]) for r in resumed] == [1, 2]
    for epoch in (1, 2):
        for k in _COMPARE:
            assert _row(resumed, epoch)[k] == _row(scratch, epoch)[k], (epoch, k)
    wa, _ = load_model(tmp_path / "a" / "r" / "last.pt")
    wb, _ = load_model(tmp_path / "b" / "r" / "last.pt")
    for (k, v), v2 in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.equal(v, v2), k
    assert "partial" not in torch.load(tmp_path / "a" / "r" / "last.pt", weights_only=False)


def test_sampler_skip_drops_the_first_indices_of_the_same_order():
    s = EpochSampler(np.arange(10) % 3, seed=1)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, skip=6)
    assert list(s) == full[6:] and len(s) == 4


def test_seed_changes_the_run(tmp_path, scratch3):
    # (same seed, same run: the resume tests compare independent runs exactly)
    assert train_cli(tmp_path, "s1", "train.epochs=1", "train.seed=1", *NO_EVAL) == 0
    other = read_csv(tmp_path / "s1" / "metrics.csv")[0]
    assert other["train_loss"] != _row(read_csv(scratch3 / "metrics.csv"), 1)["train_loss"]


def test_fresh_run_in_used_folder_starts_a_new_log(tmp_path):
    assert train_cli(tmp_path, "r", "train.epochs=1", *NO_EVAL) == 0
    assert train_cli(tmp_path, "r", "train.epochs=1", "train.resume=false", *NO_EVAL) == 0
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "r" / "metrics.csv")] == [1]
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 1


# ------------------------------------------------------------------ atomic writes
def test_atomic_write_keeps_old_file_when_writer_raises(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old state")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half a new st")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old state"

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_bytes() == b"old state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporaries left

    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o044, "checkpoints should not be owner-only"


def test_interrupted_training_state_write_keeps_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_training_state(path, {"epoch": 1})

    def boom(obj, f, *a, **k):
        Path(f).write_bytes(b"garbage")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        save_training_state(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.val=synthetic:test", ["data.val", "test split"]),
        ("data.train=synthetic:test", ["data.train", "test split"]),
        ("train.epoch=3", ["train.epoch", "train.epochs"]),
        ("model.name=resnet19", ["resnet19", "resnet18"]),
        ("data.train=nope:train", ["unknown dataset 'nope'"]),
        ("data.train=synthetic", ["malformed"]),
        ("train.epochs=three", ["train.epochs", "int"]),
    ],
)
def test_bad_input_exits_2(tmp_path, capsys, override, expected):
    assert train_cli(tmp_path, "bad", "train.epochs=1", override) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustfer: error:") and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err


def test_missing_data_root_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROBUSTFER_DATA", raising=False)
    empty = tmp_path / "data"
    empty.mkdir()
    base = ["train", "--config", RECIPE, "--output-dir", str(tmp_path / "runs"), "--name", "x",
            "train.progress=false", "data.train=ferplus:train", "data.num_classes=8"]
    assert main([*base, "--data-root", str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err
    assert main([*base, "--data-root", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert main(base) == 2
    assert "ROBUSTFER_DATA" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["garbage", "truncated", "foreign", "garbage-pt", "missing", "empty-dir"])
def test_evaluate_refuses_bad_checkpoint(e2e_run, tmp_path, capsys, kind):
    from safetensors.torch import save_file

    if kind == "garbage":
        ck = tmp_path / "best.safetensors"
        ck.write_bytes(b"\x00not a checkpoint" * 100)
    elif kind == "truncated":
        ck = tmp_path / "best.safetensors"
        data = (e2e_run["dir"] / "best.safetensors").read_bytes()
        ck.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        ck = tmp_path / "model.safetensors"
        save_file({"w": torch.zeros(3)}, str(ck))
    elif kind == "garbage-pt":
        ck = tmp_path / "last.pt"
        ck.write_bytes(b"junk")
    elif kind == "missing":
        ck = tmp_path / "nothing.safetensors"
    else:
        ck = tmp_path
    assert main(["evaluate", "--checkpoint", str(ck), "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustfer: error:") and str(ck) in err, err
    assert not (tmp_path / "ev" / "report.json").exists()


# ------------------------------------------------------------------ carved validation
def test_engine_carves_validation_when_val_is_empty(tmp_path, capsys):
    assert train_cli(tmp_path, "carve", "train.epochs=1", "data.val=null", *NO_EVAL, size=TINY) == 0
    log = capsys.readouterr().out
    cfg = load_config(RECIPE, [*TINY, "data.val=null"])
    tr, va = build_train_val(cfg.data)
    # 64 images, classes of 10/9: round(0.1 * n) = 1 per class
    assert (len(tr), len(va)) == (57, 7)
    assert va.spec == "synthetic:train:carved-val-0"
    assert f"val   {va.spec}: 7 images" in log
    assert f"train {tr.spec}: 57 images" in log
    assert {s.id for s in tr.samples}.isdisjoint(s.id for s in va.samples)
    assert load_config(tmp_path / "carve" / "config.yaml").data.val is None
    # the carve is fixed: the same again, another one with another val_seed
    _, va2 = build_train_val(cfg.data)
    assert [s.id for s in va2.samples] == [s.id for s in va.samples]
    cfg.data.val_seed = 1
    _, va3 = build_train_val(cfg.data)
    assert [s.id for s in va3.samples] != [s.id for s in va.samples]


def test_stratified_split():
    labels = np.repeat(np.arange(5), [100, 50, 10, 3, 1])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    tr, va = stratified_split(labels, 0.2, seed=7)
    assert set(tr).isdisjoint(va)
    assert sorted(tr + va) == list(range(len(labels)))
    assert tr == sorted(tr) and va == sorted(va)
    per_class = np.bincount(labels[va], minlength=5)
    # round(n * 0.2), at least 1 and at most n - 1; a single-sample class stays in train
    assert per_class.tolist() == [20, 10, 2, 1, 0]
    assert stratified_split(labels, 0.2, seed=7) == (tr, va)
    assert stratified_split(labels, 0.2, seed=8)[1] != va
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="val_fraction"):
            stratified_split(labels, bad, seed=0)


# ------------------------------------------------------------------ sampler
def test_epoch_sampler_order_depends_on_seed_and_epoch():
    labels = np.arange(50) % 5
    a, b = EpochSampler(labels, seed=3), EpochSampler(labels, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    e2 = list(a)
    assert e2 == list(b) == list(a)  # same (seed, epoch): same order, also when iterated again
    assert sorted(e2) == list(range(50))
    a.set_epoch(3)
    assert list(a) != e2
    c = EpochSampler(labels, seed=4)
    c.set_epoch(2)
    assert list(c) != e2
    assert list(EpochSampler(labels, shuffle=False)) == list(range(50))


@pytest.mark.parametrize("n, world", [(100, 4), (103, 4), (7, 2), (64, 2)])
def test_epoch_sampler_shards(n, world):
    labels = np.arange(n) % 7
    shards = []
    for rank in range(world):
        s = EpochSampler(labels, seed=1, rank=rank, world_size=world)
        s.set_epoch(5)
        shards.append(list(s))
        assert len(shards[-1]) == len(s) == -(-n // world)
    flat = [i for sh in shards for i in sh]
    assert set(flat) == set(range(n))  # the shards cover the epoch
    pad = len(flat) - n  # wrap-around padding, as DistributedSampler does
    assert pad < world
    if pad == 0:
        for i in range(world):
            for j in range(i + 1, world):
                assert set(shards[i]).isdisjoint(shards[j])
    else:
        assert len(set(flat)) == n
    single = EpochSampler(labels, seed=1)
    single.set_epoch(5)
    # ranks take interleaved slices of the one global order
    glob = list(single)
    glob = glob + glob[:pad]
    for rank in range(world):
        assert shards[rank] == glob[rank::world]


def test_epoch_sampler_balanced_draws_classes_equally():
    labels = np.repeat([0, 1, 2], [900, 90, 10])
    s = EpochSampler(labels, balanced=True, seed=0)
    counts = np.zeros(3)
    for epoch in range(3):
        s.set_epoch(epoch)
        drawn = list(s)
        assert len(drawn) == len(labels)
        counts += np.bincount(labels[drawn], minlength=3)
    frac = counts / counts.sum()
    assert np.all(np.abs(frac - 1 / 3) < 0.04), frac
    plain = EpochSampler(labels, seed=0)
    assert np.bincount(labels[list(plain)], minlength=3).tolist() == [900, 90, 10]


# ------------------------------------------------------------------ listing commands
def test_datasets_and_models_listing(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "ferplus" in out and "synthetic" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "compact_cnn" in out and "resnet18" in out
    assert main(["models", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "compact_cnn" not in out


def test_datasets_inspect_synthetic(capsys):
    assert main(["datasets", "inspect", "synthetic", "-o", "size=21"]) == 0
    out = capsys.readouterr().out
    for split in ("synthetic:train", "synthetic:valid", "synthetic:test"):
        line = next(x for x in out.splitlines() if x.startswith(split))
        assert line.split()[1:] == ["21"] + ["3"] * 7, line
    assert "neutral" in out and "fear" in out


def test_resume_with_dataloader_workers_is_exact(tmp_path, capsys, monkeypatch):
    """With data-loader workers, each epoch's worker seeds depend only on (seed, epoch, rank),
    so a run killed after epoch 1 and resumed equals an uninterrupted run."""
    workers = [*NO_EVAL, "data.num_workers=1"]
    assert train_cli(tmp_path / "b", "r", "train.epochs=2", *workers) == 0
    real_save = train_mod.save_training_state

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_training_state", save_then_die)
    assert train_cli(tmp_path / "a", "r", "train.epochs=2", *workers) == 130
    monkeypatch.setattr(train_mod, "save_training_state", real_save)
    assert train_cli(tmp_path / "a", "r", "train.epochs=2", *workers) == 0
    assert "after epoch 1" in capsys.readouterr().out
    resumed = read_csv(tmp_path / "a" / "r" / "metrics.csv")
    scratch = read_csv(tmp_path / "b" / "r" / "metrics.csv")
    for k in _COMPARE:
        assert _row(resumed, 2)[k] == _row(scratch, 2)[k], k


def test_overrides_may_follow_options(tmp_path):
    # `robustfer train --config X train.epochs=1 --name n` (overrides before an option)
    code = main(["train", "--config", RECIPE, "--output-dir", str(tmp_path), *FAST, "train.epochs=1",
                 *NO_EVAL, "--name", "late"])
    assert code == 0 and (tmp_path / "late" / "best.safetensors").exists()


def test_datasets_inspect_parses_option_values(capsys):
    assert main(["datasets", "inspect", "synthetic", "-o", "size=14", "-o", "num_classes=8"]) == 0
    out = capsys.readouterr().out
    assert "contempt" in out and "synthetic:train" in out
    assert main(["datasets", "inspect", "synthetic", "-o", "size"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_pose_head_accuracy_is_reported_against_the_pose_bins() -> None:
    """A model with a pose head gets ``pose_accuracy`` over the samples whose bin is known."""
    from robustfer.data import build_dataset
    from robustfer.data.transforms import Preprocess
    from robustfer.engine.evaluate import dataset_metrics, predict_dataset
    from robustfer.models import ModelOutput

    ds = build_dataset("synthetic:test", size=10)
    # bins 0..4 on the first eight samples, the last two unknown
    ds = ds.attach_pose({s.id: (0.0, i % 5) if i < 8 else (None, None) for i, s in enumerate(ds.samples)})

    class AlwaysBin2(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> ModelOutput:
            n = x.shape[0]
            return ModelOutput(logits=torch.zeros(n, ds.num_classes),
                               pose_logits=torch.nn.functional.one_hot(torch.full((n,), 2), 5).float())

    pre = Preprocess(input_size=16, in_chans=1)
    out = predict_dataset(AlwaysBin2(), ds, pre, torch.device("cpu"), batch_size=4, progress=False)
    m = dataset_metrics(ds, out)
    # bins of the eight known samples: 0 1 2 3 4 0 1 2 -> two are bin 2
    assert m["pose_n"] == 8 and m["pose_accuracy"] == pytest.approx(2 / 8)


def test_plot_command_draws_chosen_columns_and_names_the_real_ones(e2e_run, tmp_path, capsys):
    out = tmp_path / "h.png"
    assert main(["plot", str(e2e_run["dir"]), "--columns", "train_loss,val_loss", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    # a column the log does not have: exit 2 and the message lists what it has
    assert main(["plot", str(e2e_run["dir"]), "--columns", "train_c1", "--out", str(out)]) == 2
    assert "val_accuracy" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_tsne_command_by_expression_and_pose(e2e_run, tmp_path, capsys):
    from robustfer.engine.embed import embed_checkpoint

    ck = str(e2e_run["dir"] / "best.safetensors")
    e = embed_checkpoint(ck, "synthetic:test", max_items=30)
    assert e["points"].shape == (30, 2) and len(e["labels"]) == 30 and len(set(e["ids"])) == 30
    # the synthetic faces carry pose bins, so both colourings work
    for color in ("expression", "pose"):
        out = tmp_path / f"{color}.png"
        assert main(["tsne", "--checkpoint", ck, "--data", "synthetic:test", "--max-items", "30",
                     "--color", color, "--out", str(out)]) == 0, capsys.readouterr().err
        assert out.stat().st_size > 1000


def test_cpu_name_reads_the_model_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                   "model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz\nflags\t: fpu\n")
    assert cpu_name(x86) == "Intel(R) Xeon(R) Processor @ 2.80GHz"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 48.00\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n")
    assert cpu_name(arm) == "Raspberry Pi 4 Model B Rev 1.4"
    # No file (not Linux): falls back to platform.processor(), None when that is empty too.
    monkeypatch.setattr("platform.processor", lambda: "arm")
    assert cpu_name(tmp_path / "absent") == "arm"
    monkeypatch.setattr("platform.processor", lambda: "")
    assert cpu_name(tmp_path / "absent") is None


def test_training_task_comes_from_the_model():
    """A model without a ``training_schedule()`` gets the no-op task; one with it a
    ScheduleTask that passes the phase of each step of the run and saves its step count."""
    from robustfer.engine.train import ScheduleTask, TrainingTask, task_for
    from robustfer.models import create_model
    from robustfer.models.schedule import Phase, TrainingSchedule

    plain = task_for(create_model("compact_cnn", num_classes=7, width=0.25))
    assert type(plain) is TrainingTask and plain.forward_kwargs() == {} and plain.state_dict() == {}

    class Scheduled(torch.nn.Module):
        def training_schedule(self):
            return TrainingSchedule(((Phase.CLASSIFY, 1), (Phase.RANK, 2)))

    task = task_for(Scheduled())
    assert isinstance(task, ScheduleTask)
    got = []
    for _ in range(4):
        got.append(task.forward_kwargs()["phase"])
        task.step_done()
    assert got == [Phase.CLASSIFY, Phase.RANK, Phase.RANK, Phase.CLASSIFY]
    again = task_for(Scheduled())
    again.load_state_dict(task.state_dict())
    assert again.state_dict() == {"step": 4} and again.forward_kwargs() == {"phase": Phase.RANK}
