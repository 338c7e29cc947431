"""The attention comparison: its recipes (recipes/cmp_*.yaml on _base/cmp_base.yaml) differ only in
the method, every row trains a step, and benchmarks/attention_comparison.py records, skips, resumes
and tabulates runs (tiny synthetic runs into temporary folders)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from robustfer.cli import main as cli
from robustfer.engine.config import dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
SCRIPT = REPO / "benchmarks" / "attention_comparison.py"

spec = importlib.util.spec_from_file_location("attention_comparison", SCRIPT)
cmp = importlib.util.module_from_spec(spec)
sys.modules.setdefault("attention_comparison", cmp)
spec.loader.exec_module(cmp)

#: Synthetic data at tiny sizes, one step of one epoch; the models keep their recipes' options.
TINY = ["train.progress=false", "data.train=synthetic:train", "data.val=synthetic:valid",
        "data.extra_train=[]", "data.pose_file=null", "data.train_options={size: 32}",
        "data.eval_options={size: 16}", "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=1",
        "eval.plots=false"]
#: The resolved keys a row may set for itself: its method.
METHOD_KEYS = ("name", "model", "loss")


def resolved(name: str) -> dict:
    return load_config(RECIPES / name).to_dict()


def without(d: dict, *keys: str) -> dict:
    out = json.loads(json.dumps(d))
    for key in keys:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        node.pop(last)
    return out


# ------------------------------------------------------------------ the recipes
def test_every_row_has_a_recipe_and_a_gpu_counterpart() -> None:
    files = sorted(p.name for p in RECIPES.glob("cmp_*.yaml"))
    assert files == sorted([f"cmp_{r}.yaml" for r in cmp.ROWS] + [f"cmp_{r}_gpu.yaml" for r in cmp.ROWS])
    assert cmp.ROWS[0] == cmp.BASELINE


@pytest.mark.parametrize("row", cmp.ROWS)
def test_rows_differ_from_the_baseline_only_in_the_method(row: str) -> None:
    base = resolved("cmp_baseline.yaml")
    got = resolved(f"cmp_{row}.yaml")
    # PhaNet's pose labels and RAN's landmarks come from the annotate-pose files
    own = {"phanet": (*METHOD_KEYS, "data.pose_file"),
           "ran_landmarks": (*METHOD_KEYS, "data.landmark_file")}.get(row, METHOD_KEYS)
    assert without(got, *own) == without(base, *own)
    assert got["train"]["epochs"] == 20 and got["model"]["options"]["drop_rate"] == 0.3
    assert got["aug"]["occluders"] == 0.25 and got["aug"]["erasing"] == 0.25
    assert got["eval"]["occluders"] == "default"
    assert got["distill"]["teachers"] == []
    assert got["data"]["eval"] == ["ferplus:test", "ferplus:test:pose30", "ferplus:test:pose45",
                                   "ferplus:test:occlusion", "sfew:train:heldout+aligned",
                                   "muxspace:train:heldout+aligned"]
    if "width" in got["model"]["options"]:
        assert got["model"]["options"]["width"] == 1.0


def test_baseline_is_the_v2_final_recipe_at_20_epochs_without_distillation() -> None:
    final = resolved("ferplus_v2_final.yaml")
    base = resolved("cmp_baseline.yaml")
    assert base["model"] == final["model"] and base["data"] == final["data"] and base["aug"] == final["aug"]
    keys = ("name", "train.epochs", "distill.teachers")
    assert without(base, *keys) == without(final, *keys)
    assert final["distill"]["teachers"] and not base["distill"]["teachers"]


@pytest.mark.parametrize("row", cmp.ROWS)
def test_gpu_counterparts_change_only_the_loader(row: str) -> None:
    cpu, gpu = resolved(f"cmp_{row}.yaml"), resolved(f"cmp_{row}_gpu.yaml")
    assert gpu["data"]["num_workers"] == 8 and gpu["name"] == f"cmp_{row}_gpu"
    assert without(gpu, "name", "data.num_workers") == without(cpu, "name", "data.num_workers")
    assert cmp.recipe_hash(gpu) == cmp.recipe_hash(cpu)  # the same experiment in the results file


def test_ran_landmarks_row_crops_around_each_faces_own_landmarks() -> None:
    """cmp_ran_landmarks is RAN with regions='landmarks' fed by the annotate-pose files: the
    paper's landmark-based crops, not fixed boxes."""
    cfg = load_config(RECIPES / "cmp_ran_landmarks.yaml")
    assert cfg.model.options["regions"] == "landmarks" and "boxes" not in cfg.model.options
    assert cfg.data.landmark_file == [f"poses/ferplus_{s}.csv" for s in ("train", "valid", "test")]
    assert without(cfg.to_dict(), "name", "model.options.regions", "data.landmark_file") == without(
        load_config(RECIPES / "cmp_ran.yaml").to_dict(), "name", "model.options.regions", "data.landmark_file")


def test_resnet18_row_is_scan_ccis_trunk_without_its_attention() -> None:
    """cmp_baseline_resnet18 separates SCAN-CCI's attention from its trunk: the same ResNet-18
    layers (width, stem, cut after layer3), parameter for parameter, then pooling and a linear head."""
    from robustfer.models import create_model

    def build(name: str):
        m = load_config(RECIPES / name).model
        return create_model(m.name, num_classes=8, in_chans=1, **m.options)

    trunk = {k: v.shape for k, v in build("cmp_baseline_resnet18.yaml").backbone.state_dict().items()}
    scan = {k: v.shape for k, v in build("cmp_scan_cci.yaml").backbone.state_dict().items()}
    assert trunk == scan and any(k.startswith("stages.2.") for k in trunk)
    assert not any(k.startswith("stages.3.") for k in trunk)


def test_recipe_hash_ignores_names_seeds_and_speed_settings() -> None:
    a = load_config(RECIPES / "cmp_ran.yaml").to_dict()
    # an option added with a None default does not change the hash of recipes that leave it unset
    later = json.loads(json.dumps(a))
    later["data"]["an_option_added_later"] = None
    assert cmp.recipe_hash(later) == cmp.recipe_hash(a)
    b = load_config(RECIPES / "cmp_ran.yaml", ["name=x", "train.seed=3", "train.threads=1",
                                              "data.num_workers=4", "train.progress=false"]).to_dict()
    assert cmp.recipe_hash(a) == cmp.recipe_hash(b)
    shorter = load_config(RECIPES / "cmp_ran.yaml", ["train.epochs=1"]).to_dict()
    assert cmp.recipe_hash(a) != cmp.recipe_hash(shorter)
    assert cmp.recipe_hash(a) != cmp.recipe_hash(resolved("cmp_ran_no_rb.yaml"))


# ------------------------------------------------------------------ every row trains
@pytest.mark.parametrize("row", cmp.ROWS)
def test_row_builds_its_model_and_trains_a_step(row: str, tmp_path: Path, one_thread: None) -> None:
    extra = []
    if load_config(RECIPES / f"cmp_{row}.yaml").data.landmark_file:
        # the synthetic faces' landmarks: one from a file, the others the template's
        lm = tmp_path / "landmarks.csv"
        lm.write_text("id,yaw,pitch,roll,yaw_bin,method,landmarks\n"
                      "train/00000,,,,,mesh,10 12 22 12 16 18 12 24 20 24\n")
        extra = [f"data.landmark_file={lm}"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(["train", "--config", str(RECIPES / f"cmp_{row}.yaml"), "--output-dir", str(tmp_path),
                  "--name", row, *TINY, "data.eval=[]", *extra])
    assert rc == 0, buf.getvalue()
    if extra:
        assert "landmarks: 5 per face" in buf.getvalue() and "not used" not in buf.getvalue()
    saved = load_config(tmp_path / row / "config.yaml")
    assert saved.model.name == load_config(RECIPES / f"cmp_{row}.yaml").model.name
    assert saved.aug.occluders == 0.25 and saved.data.input_size == 48
    assert len((tmp_path / row / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1


# ------------------------------------------------------------------ the runner
def test_seeds_and_order() -> None:
    seeds = cmp.parse_seeds(cmp.DEFAULT_SEEDS, list(cmp.ROWS))
    assert seeds["baseline"] == 3 and all(seeds[r] == 2 for r in cmp.ROWS if r != "baseline")
    assert cmp.plan(["baseline", "ran"], {"baseline": 3, "ran": 2}) == [
        ("baseline", 0), ("ran", 0), ("baseline", 1), ("ran", 1), ("baseline", 2)]
    with pytest.raises(SystemExit, match="no row"):
        cmp.parse_seeds(["nope=2"], ["ran"])


def _line(row: str, seed: int, test: float, h: str = "h1", created: str = "2026-01-01T00:00:00") -> dict:
    return {"row": row, "seed": seed, "recipe_hash": h, "created": created, "test": test, "params": 1_170_000,
            "occluders": {"block30": test - 10, "mask": test - 20}}


def test_record_replaces_the_line_of_the_same_run(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    cmp.record(path, _line("ran", 0, 80.0))
    cmp.record(path, _line("ran", 1, 81.0))
    cmp.record(path, _line("ran", 0, 82.0))  # seed 0 again: replaced in place
    cmp.record(path, _line("ran", 0, 83.0, h="h2"))  # another recipe: a line of its own
    lines = cmp.read_lines(path)
    assert [(o["seed"], o["test"], o["recipe_hash"]) for o in lines] == [(0, 82.0, "h1"), (1, 81.0, "h1"),
                                                                        (0, 83.0, "h2")]


def test_table_marks_differences_beyond_the_seed_spread() -> None:
    lines = [_line("baseline", s, v) for s, v in enumerate([80.0, 81.0, 82.0])]  # 81 +- 1
    lines += [_line("ran", s, v) for s, v in enumerate([85.0, 86.0])]  # 85.5 +- 0.71: beyond
    lines += [_line("aha", s, v) for s, v in enumerate([81.5, 82.5])]  # 82 +- 0.71: within
    lines += [_line("scan_cci", 0, 90.0)]  # one seed: never marked
    lines += [_line("aha", 0, 10.0, h="old", created="2025-01-01T00:00:00")]  # older recipe: left out
    text = cmp.table(lines)
    rows = {r.split("|")[1].strip(): r for r in text.splitlines() if r.startswith("| `")}
    assert "81.00 ± 1.00" in rows["`baseline`"]
    assert "**85.50 ± 0.71 (+4.50)**" in rows["`ran`"]
    assert "82.00 ± 0.71" in rows["`aha`"] and "**" not in rows["`aha`"]
    assert "90.00" in rows["`scan_cci`"] and "**" not in rows["`scan_cci`"]
    assert rows["`aha`"].rstrip(" |").endswith("2") and "1.17 M" in rows["`aha`"]
    assert "| 1.17 M | - | - | 2 |" in rows["`aha`"]  # no speed or wall time in these lines
    assert "|mean - baseline mean| > std + baseline std" in text
    assert "aha: 1 line(s) of an older recipe" in text
    assert "72.00 ± 0.71" in rows["`aha`"]  # the 30 % block column
    compact = cmp.table(lines, columns=cmp.COMPACT_COLUMNS)
    head = compact.splitlines()[0]
    assert "| FERPlus test |" in head and "| realistic occluders |" in head and "block 30" not in head
    assert "**85.50 ± 0.71 (+4.50)**" in compact and "72.00" not in compact


def test_speed_columns_leave_out_runs_on_another_thread_count() -> None:
    def timed(row: str, seed: int, threads: int, speed: float, wall: float) -> dict:
        return {**_line(row, seed, 80.0), "hardware": {"threads": threads}, "images_per_second": speed,
                "train_wall_seconds": wall}

    lines = [timed("baseline", s, 1, 300.0 + s, 600.0) for s in range(3)]
    lines += [timed("ran", 0, 1, 100.0, 1200.0), timed("ran", 1, 2, 180.0, 660.0)]
    text = cmp.table(lines)
    rows = {r.split("|")[1].strip(): r for r in text.splitlines() if r.startswith("| `")}
    assert rows["`ran`"].rstrip(" |").endswith("| 100 | 20 | 2")  # seed 1 (2 threads) not in speed or wall
    assert rows["`baseline`"].rstrip(" |").endswith("| 301 | 10 | 3")
    assert "leave out `ran` seed 1" in text and "other than the 1 of" in text


def test_latency_of_every_row_goes_into_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 one_thread: None) -> None:
    lat_file = tmp_path / "lat.json"
    assert cmp.main(["--latency", "--rows", "baseline", "ran_landmarks", "--latency-file", str(lat_file),
                     "--latency-repeats", "3"]) == 0
    lat = json.loads(lat_file.read_text())
    assert set(lat["rows"]) == {"baseline", "ran_landmarks"} and lat["threads"] == 1
    assert all(v["ms_per_face"] > 0 and len(v["round_medians"]) == 3 for v in lat["rows"].values())
    assert lat["rows"]["baseline"]["params"] == 1_165_416
    capsys.readouterr()
    text = cmp.table([_line("baseline", 0, 80.0, created="2026-01-02T00:00:00")], lat)
    assert "| ms/face |" in text and f"| {lat['rows']['baseline']['ms_per_face']:.2f} |" in text
    assert "batch 1, 1 thread(s)" in text
    assert "| ms/face |" not in cmp.table([_line("baseline", 0, 80.0)])


def test_gpu_without_counterparts_and_missing_pose_files_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cmp, "RECIPES", tmp_path)  # no recipes at all
    assert cmp.main(["--gpu", "--rows", "ran", "--results", str(tmp_path / "r.jsonl")]) == 2
    assert "no GPU counterpart for cmp_ran_gpu.yaml" in capsys.readouterr().err
    monkeypatch.setattr(cmp, "RECIPES", RECIPES)
    monkeypatch.chdir(tmp_path)  # no poses/ here
    assert cmp.main(["--rows", "phanet", "--results", str(tmp_path / "r.jsonl"),
                     "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "poses/ferplus_train.csv" in err and "annotate-pose" in err
    assert not (tmp_path / "runs").exists()
    # RAN's landmark row reads the same files
    assert cmp.main(["--rows", "baseline", "ran_landmarks", "--results", str(tmp_path / "r.jsonl"),
                     "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "poses/ferplus_valid.csv" in err and err.rstrip().endswith("(--rows): ran_landmarks."), err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_runner_records_skips_resumes_and_tabulates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, results = tmp_path / "runs", tmp_path / "results" / "runs.jsonl"
    overrides = [*TINY[1:], "train.threads=1", "data.eval=[synthetic:test]", "eval.occlusion_on=[first]",
                 "eval.occluders=block:0.3,eye_band,lower_face,realistic"]
    argv = ["--rows", "baseline", "ran_no_rb", "--seeds", "2", "--output-dir", str(out),
            "--results", str(results)]
    argv += [a for o in overrides for a in ("--override", o)]
    assert cmp.main(argv) == 0
    first = capsys.readouterr().out
    assert first.count(": training (log:") == 4
    lines = cmp.read_lines(results)
    assert sorted((o["row"], o["seed"]) for o in lines) == [
        ("baseline", 0), ("baseline", 1), ("ran_no_rb", 0), ("ran_no_rb", 1)]
    one = lines[0]
    assert one["recipe"] == "recipes/cmp_baseline.yaml" and one["epochs"] == 1 and one["best_epoch"] == 1
    assert one["test_spec"] == "synthetic:test" and one["test"] is not None
    assert one["val_accuracy"] is not None
    assert set(one["occluders"]) == {"block30", "eye_band", "lower_face", *cmp.REALISTIC}
    assert one["realistic"] is not None and one["params"] == 1_165_416 and one["hardware"]["torch"]
    assert one["images_per_second"] and one["train_wall_seconds"] and one["ece"] is not None
    assert one["pose30"] is None  # not evaluated on synthetic data

    # a re-run skips the finished runs, and finishes one whose report is missing from its last.pt
    (out / "cmp_ran_no_rb_s1" / "report.json").unlink()
    assert cmp.main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("finished, skipped") == 3 and again.count("resuming from last.pt") == 1
    assert "resumed from" in (out / "cmp_ran_no_rb_s1.log").read_text()
    lines = cmp.read_lines(results)
    resumes = {(o["row"], o["seed"]): o["resumes"] for o in lines}
    assert len(lines) == 4 and resumes[("ran_no_rb", 1)] == 1 and resumes[("ran_no_rb", 0)] == 0

    # a fresh clone (no run folders) skips the runs the results file has under the current hash
    shutil.rmtree(out / "cmp_baseline_s1")
    assert cmp.main(argv) == 0
    fresh = capsys.readouterr().out
    assert fresh.count("finished, skipped") == 3 and fresh.count("recorded in") == 1
    assert ": training (log:" not in fresh and not (out / "cmp_baseline_s1").exists()
    assert len(cmp.read_lines(results)) == 4

    assert cmp.main(["--table", "--results", str(results), "--table-out", str(tmp_path / "t.md")]) == 0
    text = capsys.readouterr().out
    assert "| `baseline` |" in text and "| `ran_no_rb` |" in text and " ± " in text
    assert (tmp_path / "t.md").read_text() == text

    # the GPU script is the same runner with --gpu: the rows' GPU recipes, recorded as the same
    # experiment (a GPU seed replaces the CPU line of that seed); here on CPU, loader in-process
    # (--retrain-recorded: by default it would skip the seed the results file has)
    gpu = ["--gpu", "--retrain-recorded", "--rows", "baseline", "--seeds", "1", "--output-dir", str(tmp_path / "gpu"),
           "--results", str(results)] + [a for o in [*overrides, "data.num_workers=0"] for a in ("--override", o)]
    assert cmp.main(gpu) == 0
    capsys.readouterr()
    lines = cmp.read_lines(results)
    assert len(lines) == 4
    g = next(o for o in lines if o["row"] == "baseline" and o["seed"] == 0)
    assert g["recipe"] == "recipes/cmp_baseline_gpu.yaml" and g["run"].endswith("gpu/cmp_baseline_s0")


@pytest.mark.slow
def test_jobs_train_runs_at_once_and_record_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, results = tmp_path / "runs", tmp_path / "runs.jsonl"
    overrides = [*TINY[1:], "data.eval=[synthetic:test]", "eval.occluders=none"]
    argv = ["--rows", "baseline", "--seeds", "baseline=3", "--jobs", "2", "--output-dir", str(out),
            "--results", str(results)] + [a for o in overrides for a in ("--override", o)]
    assert cmp.main(argv) == 0
    text = capsys.readouterr().out
    assert "--jobs 2: train.threads=" in text and text.count(": training (log:") == 3
    assert text.count(": finished, recorded in") == 3
    lines = cmp.read_lines(results)
    assert sorted(o["seed"] for o in lines) == [0, 1, 2] and all(o["row"] == "baseline" for o in lines)
    assert all(any(v.startswith("train.threads=") for v in o["overrides"]) for o in lines)
    assert all((out / f"cmp_baseline_s{s}.log").read_text() for s in range(3))
    # a failing run (here: resuming from a broken last.pt) is reported; the others still finish
    results.unlink()
    shutil.rmtree(out)
    (out / "cmp_baseline_s1").mkdir(parents=True)
    (out / "cmp_baseline_s1" / "last.pt").write_bytes(b"not a checkpoint")
    assert cmp.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.count("failed (exit") == 1 and "cmp_baseline_s1: failed" in captured.err
    assert sorted(o["seed"] for o in cmp.read_lines(results)) == [0, 2]


def test_dry_run_prints_the_commands_it_would_train_and_marks_the_recorded_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "runs.jsonl"
    args = cmp.parse_args(["--rows", "baseline", "--results", str(results)])
    current = cmp.recipe_hash(cmp.resolved("baseline", 1, args).to_dict())
    cmp.record(results, _line("baseline", 1, 80.0, h=current))
    cmp.record(results, _line("baseline", 2, 80.0, h="an-older-recipe"))
    assert cmp.main(["--rows", "baseline", "--seeds", "3", "--results", str(results), "--output-dir",
                     str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("--name ")[1].split()[0] for line in out if " train --config " in line] == [
        "cmp_baseline_s0", "cmp_baseline_s2"]  # seed 2's line is of another recipe: trained again
    assert [line for line in out if line.startswith("# ")] == [
        next(line for line in out if "cmp_baseline_s1: recorded in" in line)]
    assert not (tmp_path / "runs").exists()
    # a finished run folder is recorded when the runner meets it, not trained: the dry run says so;
    # one finished under another config is neither recorded nor trained, and it says that too
    argv = ["--rows", "baseline", "--seeds", "3", "--results", str(results), "--output-dir",
            str(tmp_path / "runs"), "--dry-run"]
    for seed, lr in ((0, None), (2, 0.5)):
        cfg = cmp.resolved("baseline", seed, cmp.parse_args(argv))
        if lr is not None:
            cfg.optim.lr = lr
        (tmp_path / "runs" / f"cmp_baseline_s{seed}").mkdir(parents=True)
        (tmp_path / "runs" / f"cmp_baseline_s{seed}" / "config.yaml").write_text(dump_config(cfg))
        (tmp_path / "runs" / f"cmp_baseline_s{seed}" / "report.json").write_text("{}")
    assert cmp.main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert not [line for line in out if " train --config " in line]
    assert any(line.startswith("# [1/3] cmp_baseline_s0: finished in ") for line in out)
    assert "cmp_baseline_s2: finished with another config" in captured.err


def test_jobs_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cmp.parse_args(["--jobs", "0"])
    assert "--jobs 0: give at least 1" in capsys.readouterr().err
