"""The attention comparison: every attention model against the baseline under one shared recipe base,
over several seeds, with a results file that grows run by run and a mean +- std table.

Rows (one recipe each, ``recipes/cmp_<row>.yaml``, all on ``recipes/_base/cmp_base.yaml``: the
model-v2 final recipe's data and augmentation -- FERPlus plus the SFEW/muxspace rest, aligned;
erasing and realistic occluders on a quarter of the faces each -- at 48 px, 20 epochs, AdamW,
cosine, no distillation; so the only difference between rows is the method):

    baseline        compact CNN width 1.0, the shipped model's architecture
    ran             RAN on the same trunk, face + the seven fixed crops at 32 px
    ran_landmarks   RAN with five crops centred on each face's landmarks (annotate-pose files)
    ran_no_rb       RAN without the region-biased loss
    scan_cci        SCAN-CCI (ResNet-18 width 1.0, stem stride 1: it has no compact-CNN trunk)
    phanet          PhaNet (its own DenseNet-13 trunks), pose labels from annotate-pose files
    phanet_no_pose  PhaNet without the pose branch
    aha             AHA on compact-CNN width-1.0 sub-networks, two-step fusion, CosFace
    aha_concat      AHA with plain concatenation instead of the two-step fusion

Each (row, seed) trains through the engine, in a subprocess (``--jobs N``: N at once)::

    robustfer train --config recipes/cmp_<row>.yaml --output-dir OUT --name cmp_<row>_s<S> \\
        [--data-root ROOT] train.progress=false train.seed=S [--override ...]

(its output goes to ``OUT/cmp_<row>_s<S>.log``), seeds first (every row's seed 0, then seed 1,
...), so an interrupted comparison already has one seed of every row. Re-running the same command
skips the finished runs (those with a ``report.json``) and the runs without a folder that the
results file already has under the recipe's current hash (so a fresh clone, whose ``runs/`` is
empty, continues the comparison where the committed results file stands; ``--retrain-recorded``
trains them again), and resumes an unfinished one from its ``last.pt`` (the engine's own
resumption: the same command continues it). After each finished run a compact summary of its
``report.json`` (accuracies on every eval set, each occluder's accuracy on FER2013Test, ECE,
parameters, wall time, images/s, hardware) replaces or joins its line in the results file
(``--results``, default ``docs/results/attention_runs.jsonl``, one JSON object a line). A line is keyed by row, seed and recipe hash -- a hash of the run's resolved config without
its name, seed, paths and the settings that change only speed (threads, loader workers, device,
progress, checkpoint interval, plots) -- so recording a run again replaces its line, and a GPU run
of a seed replaces the CPU run of that seed (the same experiment; the line's hardware says where).

``--latency`` measures each row's inference latency (PyTorch, batch 1, 1 thread; the model built
from its recipe, since the weights do not change the cost) into ``--latency-file`` (default
``docs/results/attention_latency.json``), which the table's ms/face column reads.

``--table`` prints the markdown table (``--table-out PATH`` also writes it): per row, mean +- std
over its seeds (sample std) of FERPlus test, pose > 30, pose > 45, the RAN occlusion list, the 30 %
block, the eye band, the lower-face band, the realistic occluders (mean of mask, sunglasses, hand,
scarf, hair), the held-out SFEW movies and muxspace persons; parameters and the number of seeds.
A row whose lines come from more than one recipe hash uses its newest hash only (older lines are
named and left out). A cell is marked where the row's mean differs from the baseline's by more than
the seed spread: ``|mean - baseline mean| > std + baseline std``, both with at least two seeds (the
rule is printed under the table).

On 2 CPU cores (from the repository root; the annotate-pose files first, once -- PhaNet's pose
labels and RAN's landmarks, as in recipes/cmp_phanet.yaml and cmp_ran_landmarks.yaml)::

    for s in train valid test; do robustfer annotate-pose ferplus:$s --data-root ../shared/data \\
        --out poses/ferplus_$s.csv; done
    nice python benchmarks/attention_comparison.py --data-root ../shared/data --jobs 2
    python benchmarks/attention_comparison.py --table

``--rows ran aha`` trains some rows only; ``--seeds 2 baseline=3`` is the default (two seeds a row,
three for the baseline; seeds are 0 .. N-1); ``--override KEY=VALUE`` (repeatable) passes
overrides to every run; ``--jobs 2`` trains two runs at once, one thread each (``train.threads`` is
the cores divided by the jobs unless an override sets it), the next starting as one finishes; ``--dry-run``
prints the commands of the runs it would train.

On a GPU machine (one GPU; the repository and the datasets copied there, from the repository
root): the same commands with ``--gpu``, which trains the rows' GPU counterparts
``recipes/cmp_<row>_gpu.yaml`` -- the same recipes with 8 loader workers (``_base/cmp_gpu.yaml``);
the engine picks the GPU (``train.device: auto``) and trains under bf16 autocast (``train.amp``)::

    for s in train valid test; do robustfer annotate-pose ferplus:$s --data-root DATA \\
        --out poses/ferplus_$s.csv; done
    python benchmarks/attention_comparison.py --gpu --data-root DATA --output-dir runs/cmp
    python benchmarks/attention_comparison.py --table --table-out runs/cmp/table.md

and commit ``docs/results/attention_runs.jsonl`` from there. It trains the (row, seed) pairs the
committed file lacks; add ``--retrain-recorded`` to train the recorded ones too, whose GPU lines
then replace the CPU lines of the same row, seed and recipe. ``--gpu`` refuses when a row has no
GPU counterpart. At 48 px these models are small for a GPU: expect the loader (occluder drawing, about 1 ms a face) to set
the pace, minutes per run.

Cost on 2 CPU cores, two runs at once with one thread each (measured: the table's run wall and
train images/s columns, each run's hardware in its line of the results file): an epoch is 31,041
faces (FERPlus train 27,947, SFEW rest 611, muxspace rest 2,483); about 35-40 min a run for the
baseline and PhaNet, 1.5 h for AHA, 1.7 h for SCAN-CCI and 2-2.4 h for RAN on a 2-core Intel Xeon
with AMX or AMD EPYC with AVX-512 bf16 -- about 25 h of runs for the default 19, half that in wall
time with ``--jobs 2``. Forward multiply-adds per 48 px face relative to the baseline's 96 M: ran 4.1x,
ran_landmarks 3.2x, scan_cci 3.1x, aha and aha_concat 3.0x, phanet 0.25x (bound by its many small
layers instead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: runners side by side may then lose a line; --jobs does not
    fcntl = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
#: The rows, in table order; row ``r`` is ``recipes/cmp_<r>.yaml`` (``cmp_<r>_gpu.yaml`` with --gpu).
ROWS = ("baseline", "ran", "ran_landmarks", "ran_no_rb", "baseline_resnet18", "scan_cci", "phanet",
        "phanet_no_pose", "aha", "aha_concat")
BASELINE = "baseline"
DEFAULT_SEEDS = ["2", f"{BASELINE}=3"]
DEFAULT_RESULTS = REPO / "docs" / "results" / "attention_runs.jsonl"
#: Per-row inference latency (``--latency``), read by the table when present.
DEFAULT_LATENCY = REPO / "docs" / "results" / "attention_latency.json"
#: Config keys left out of the recipe hash: names, paths, the seed and what changes only speed.
NOT_HASHED = ("name", "output_dir", "data.root", "data.num_workers", "train.seed", "train.threads",
              "train.progress", "train.device", "train.resume", "train.checkpoint_minutes", "eval.plots")
#: Summary fields of the eval sets after the first (which is ``test``), by spec.
SUBSETS = {"pose30": "ferplus:test:pose30", "pose45": "ferplus:test:pose45",
           "occlusion": "ferplus:test:occlusion", "sfew_heldout": "sfew:train:heldout+aligned",
           "muxspace_heldout": "muxspace:train:heldout+aligned"}
REALISTIC = ("mask", "sunglasses", "hand", "scarf", "hair")
#: Table columns: (header, summary field; ``occ:NAME`` = that occluder on the first eval set).
COLUMNS = (("FERPlus test", "test"), ("pose > 30", "pose30"), ("pose > 45", "pose45"),
           ("occlusion", "occlusion"), ("block 30 %", "occ:block30"), ("eye band", "occ:eye_band"),
           ("lower face", "occ:lower_face"), ("realistic occluders", "realistic"),
           ("SFEW held-out", "sfew_heldout"), ("muxspace held-out", "muxspace_heldout"))
#: The README's compact table: the robustness columns only.
COMPACT_COLUMNS = tuple(c for c in COLUMNS if c[1] in ("test", "pose30", "pose45", "occlusion", "realistic",
                                                        "sfew_heldout"))
RULE = ("Marked (**bold**, difference to the baseline in brackets): |mean - baseline mean| > std + "
        "baseline std, both over at least two seeds (sample std); unmarked differences are within the "
        "seed spread.")


# ---------------------------------------------------------------------- recipes and runs
def recipe_for(row: str, gpu: bool = False) -> Path:
    """The recipe of ``row`` (its GPU counterpart with ``gpu``)."""
    return RECIPES / f"cmp_{row}{'_gpu' if gpu else ''}.yaml"


def run_name(row: str, seed: int) -> str:
    return f"cmp_{row}_s{seed}"


def _drop_none(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_none(v) for k, v in node.items() if v is not None}
    return node


def recipe_hash(cfg: dict[str, Any]) -> str:
    """12 hex digits identifying what a resolved config (``Config.to_dict()``) trains, without
    the keys of :data:`NOT_HASHED`. A key whose value is None counts as absent, so an option
    added later with a None (off) default leaves the hashes -- and the recorded lines -- of the
    recipes that do not set it as they were."""
    d = json.loads(json.dumps(cfg))
    for key in NOT_HASHED:
        *parents, last = key.split(".")
        node = d
        for p in parents:
            node = node.get(p, {})
        node.pop(last, None)
    return hashlib.sha256(json.dumps(_drop_none(d), sort_keys=True).encode()).hexdigest()[:12]


def parse_seeds(items: list[str], rows: list[str]) -> dict[str, int]:
    """``["2", "baseline=3"]`` -> seeds per row (a bare number: every row not named)."""
    default, named = None, {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            n = int(value if sep else key)
        except ValueError:
            raise SystemExit(f"--seeds {item!r}: use N or ROW=N, e.g. --seeds 2 {BASELINE}=3") from None
        if n < 1:
            raise SystemExit(f"--seeds {item!r}: need at least one seed")
        if sep:
            if key not in ROWS:
                raise SystemExit(f"--seeds {item!r}: no row {key!r}; rows: {', '.join(ROWS)}")
            named[key] = n
        else:
            default = n
    return {r: named.get(r, default if default is not None else 1) for r in rows}


def plan(rows: list[str], seeds: dict[str, int]) -> list[tuple[str, int]]:
    """(row, seed) pairs in training order: every row's seed 0, then every row's seed 1, ..."""
    return [(r, s) for s in range(max(seeds.values(), default=0)) for r in rows if s < seeds[r]]


def robustfer_command() -> list[str]:
    """The ``robustfer`` console script of this interpreter (or the CLI through ``-c``)."""
    script = Path(sys.executable).with_name("robustfer")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from robustfer.cli import main; sys.exit(main())"]


def train_command(row: str, seed: int, args: argparse.Namespace) -> list[str]:
    cmd = [*robustfer_command(), "train", "--config", str(recipe_for(row, args.gpu)),
           "--output-dir", str(args.output_dir), "--name", run_name(row, seed)]
    if args.data_root:
        cmd += ["--data-root", str(args.data_root)]
    return cmd + ["train.progress=false", f"train.seed={seed}", *args.override]


def resolved(row: str, seed: int, args: argparse.Namespace) -> Any:
    """The run's config as the engine will resolve it (recipe, then the runner's overrides)."""
    from robustfer.engine.config import load_config

    overrides = ["train.progress=false", f"train.seed={seed}", *args.override]
    return load_config(recipe_for(row, args.gpu), overrides)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run folder was trained with (its ``config.yaml``)."""
    from robustfer.engine.config import load_config

    return load_config(run_dir / "config.yaml").to_dict()


def missing_inputs(pairs: list[tuple[str, int]], args: argparse.Namespace) -> list[str]:
    """annotate-pose files the selected runs read and this folder lacks (PhaNet's pose labels,
    RAN's landmarks)."""
    missing: list[str] = []
    for row, seed in pairs:
        data = resolved(row, seed, args).data
        for files in (data.pose_file, data.landmark_file):
            for f in [files] if isinstance(files, str) else files or []:
                if not Path(f).is_file() and f not in missing:
                    missing.append(f)
    return missing


# ---------------------------------------------------------------------- summaries and the results file
def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * x, 3)


def summarize(run_dir: Path, row: str, seed: int, recipe: str, overrides: list[str]) -> dict[str, Any]:
    """The results-file line of a finished run (``report.json``, ``config.yaml`` and
    ``best.safetensors`` of ``run_dir``); accuracies in %."""
    from robustfer.runtime.checkpoint import load_model

    report = json.loads((run_dir / "report.json").read_text())
    cfg = run_config(run_dir)
    results: dict[str, Any] = report["results"]
    first = next(iter(results))
    history = report.get("history") or []
    best = next((h for h in history if h.get("epoch") == report.get("best_epoch")), {})
    speeds = [h["images_per_second"] for h in history if h.get("images_per_second")]
    occ = {k: _pct(v["accuracy"]) for k, v in results[first].get("occlusion", {}).get("results", {}).items()}
    real = [occ[k] for k in REALISTIC if occ.get(k) is not None]
    model, _ = load_model(run_dir / "best.safetensors")
    cal = results[first].get("calibration", {})
    return {
        "row": row, "seed": seed, "recipe": recipe, "recipe_hash": recipe_hash(cfg),
        "run": str(run_dir), "overrides": overrides, "model": report.get("model"),
        "epochs": cfg["train"]["epochs"], "epochs_trained": len(history),
        "best_epoch": report.get("best_epoch"), "val_accuracy": _pct(best.get("val_accuracy")),
        "test_spec": first, "test": _pct(results[first]["accuracy"]),
        **{k: _pct(results[s]["accuracy"]) if s in results else None for k, s in SUBSETS.items()},
        "accuracy": {s: _pct(m["accuracy"]) for s, m in results.items()},
        "occluders": occ, "realistic": round(statistics.fmean(real), 3) if real else None,
        "ece": cal.get("ece"), "ece_before_temperature": cal.get("ece_before"),
        "params": sum(p.numel() for p in model.parameters()),
        "train_wall_seconds": report.get("train_wall_seconds"), "resumes": report.get("resumes"),
        "images_per_second": round(statistics.median(speeds), 1) if speeds else None,
        "hardware": report.get("hardware"), "created": report.get("created"),
    }


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip()]


def record(path: Path, line: dict[str, Any]) -> None:
    """Put ``line`` into the results file: in place of the line of the same row, seed and recipe
    hash, else at the end (atomically)."""
    from robustfer.runtime.checkpoint import atomic_write

    key = (line["row"], line["seed"], line["recipe_hash"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        if fcntl is not None:  # two runners recording at once: one reads after the other wrote
            fcntl.flock(lock, fcntl.LOCK_EX)
        lines = read_lines(path)
        at = next((i for i, o in enumerate(lines)
                   if (o.get("row"), o.get("seed"), o.get("recipe_hash")) == key), None)
        if at is None:
            lines.append(line)
        else:
            lines[at] = line
        text = "".join(json.dumps(o, sort_keys=True) + "\n" for o in lines)
        atomic_write(path, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------------- the table
def _value(line: dict[str, Any], field: str) -> float | None:
    if field.startswith("occ:"):
        return (line.get("occluders") or {}).get(field[4:])
    return line.get(field)


def _threads(line: dict[str, Any]) -> int | None:
    return (line.get("hardware") or {}).get("threads")


def _stats(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def current_lines(lines: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Lines per row, of each row's newest recipe hash; and notes on the lines left out."""
    by_row: dict[str, list[dict[str, Any]]] = {}
    notes = []
    for row in [*ROWS, *sorted({o["row"] for o in lines} - set(ROWS))]:
        mine = [o for o in lines if o["row"] == row]
        if not mine:
            continue
        newest = max(mine, key=lambda o: o.get("created") or "")["recipe_hash"]
        by_row[row] = [o for o in mine if o["recipe_hash"] == newest]
        old = len(mine) - len(by_row[row])
        if old:
            notes.append(f"{row}: {old} line(s) of an older recipe (hash other than {newest}) left out.")
    return by_row, notes


def table(lines: list[dict[str, Any]], latency: dict[str, Any] | None = None,
          columns: tuple[tuple[str, str], ...] = COLUMNS) -> str:
    """The markdown table of the results-file ``lines`` (mean +- std over seeds, in %), with a
    ms/face column from ``latency`` (the ``--latency`` file's rows) when given; ``columns`` picks
    the accuracy columns (:data:`COMPACT_COLUMNS` for the README)."""
    by_row, notes = current_lines(lines)
    base = by_row.get(BASELINE, [])
    # Speed and wall columns compare like with like: only runs on the thread count most runs used.
    threads = [_threads(o) for rs in by_row.values() for o in rs]
    usual = statistics.mode(threads) if threads else None
    odd = [f"`{o['row']}` seed {o['seed']}" for rs in by_row.values() for o in rs if _threads(o) != usual]
    if odd:
        notes.append(f"Train images/s and run wall leave out {', '.join(odd)}: trained (or finished) on a "
                     f"thread count other than the {usual} of the other runs.")
    lat = (latency or {}).get("rows", {})
    head = ["row", *(h for h, _ in columns), "params", *(["ms/face"] if lat else []), "train images/s",
            "run wall (min)", "seeds"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, runs in by_row.items():
        cells = [f"`{row}`"]
        for _, field in columns:
            vals = [v for v in (_value(o, field) for o in runs) if v is not None]
            if not vals:
                cells.append("-")
                continue
            mean, std = _stats(vals)
            cell = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
            bvals = [v for v in (_value(o, field) for o in base) if v is not None]
            if row != BASELINE and std is not None and len(bvals) > 1:
                bmean, bstd = _stats(bvals)
                if abs(mean - bmean) > std + bstd:
                    cell = f"**{cell} ({mean - bmean:+.2f})**"
            cells.append(cell)
        params = {o.get("params") for o in runs if o.get("params")}
        cells.append(", ".join(f"{p / 1e6:.2f} M" for p in sorted(params)) or "-")
        if lat:
            cells.append(f"{lat[row]['ms_per_face']:.2f}" if row in lat else "-")
        timed = [o for o in runs if _threads(o) == usual]
        speed = [o["images_per_second"] for o in timed if o.get("images_per_second")]
        cells.append(f"{statistics.median(speed):.0f}" if speed else "-")
        wall = [o["train_wall_seconds"] for o in timed if o.get("train_wall_seconds")]
        cells.append(f"{statistics.fmean(wall) / 60:.0f}" if wall else "-")
        cells.append(str(len({o["seed"] for o in runs})))
        out.append("| " + " | ".join(cells) + " |")
    cpus = sorted({(o.get("hardware") or {}).get("processor") or "?" for rs in by_row.values() for o in rs})
    out += ["", "Accuracy (%), mean ± std over seeds; occluders on the first eval set (FER2013Test); "
            "realistic occluders = mean of " + ", ".join(REALISTIC) + ". Train images/s: the median over "
            "the row's runs of each run's median epoch throughput; run wall: training, validation and the "
            "final evaluation (a resumed run's parts added up), mean over the runs (CPU: " + "; ".join(cpus)
            + "; each run's threads and hardware are in its line of the results file). " + RULE, *notes]
    if lat:
        cores = f", {latency['cpu_count']} cores" if latency.get("cpu_count") else ""
        out.insert(-len(notes) if notes else len(out),
                   f"ms/face: PyTorch, batch 1, {latency.get('threads')} thread(s), median of "
                   f"{latency.get('rounds')} rounds of {latency.get('repeats')} calls after warm-up, on "
                   f"{latency.get('processor')}{cores} ({latency.get('created', '')[:10]}; "
                   "`python benchmarks/attention_comparison.py --latency` on an otherwise idle machine).")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, metavar="ROW",
                   help=f"rows to train (default all: {' '.join(ROWS)})")
    p.add_argument("--seeds", nargs="+", default=DEFAULT_SEEDS, metavar="N|ROW=N",
                   help="seeds per row, 0 .. N-1 (default: 2, baseline=3)")
    p.add_argument("--data-root", default=None, help="passed to robustfer train (default $ROBUSTFER_DATA)")
    p.add_argument("--output-dir", type=Path, default=Path("runs/cmp"), help="parent of the run folders")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the results file (JSON lines)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. train.threads=1 (repeatable)")
    p.add_argument("--gpu", action="store_true",
                   help="train the rows' GPU counterparts (recipes/cmp_<row>_gpu.yaml)")
    p.add_argument("--table", action="store_true", help="print the table of the results file; train nothing")
    p.add_argument("--table-out", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--compact", action="store_true",
                   help="with --table: the robustness columns only (the README's table)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process (default 1; with more, every run "
                        "gets train.threads=<cores / jobs> unless --override sets train.threads)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands of the runs it would train (the recorded ones, skipped, "
                        "and the finished folders, recorded only, as # lines); train nothing")
    p.add_argument("--retrain-recorded", action="store_true",
                   help="train (and record again) the runs the results file already has under the "
                        "recipe's current hash, instead of skipping them")
    p.add_argument("--latency", action="store_true",
                   help="measure each row's batch-1 inference latency (1 thread) into --latency-file; "
                        "train nothing (run it on an otherwise idle machine)")
    p.add_argument("--latency-repeats", type=int, default=50, help="timed calls per row and round (--latency)")
    p.add_argument("--latency-file", type=Path, default=DEFAULT_LATENCY,
                   help="the latency file (--latency writes it, the table reads it)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: give at least 1 (runs trained at once)")
    return args


def measure_latency(rows: list[str], threads: int = 1, repeats: int = 50, rounds: int = 3) -> dict[str, Any]:
    """Batch-1 PyTorch latency (ms per face) of every row's model, built from its recipe (the
    weights do not change the cost), interleaved over ``rounds`` rounds; median of the round
    medians."""
    import platform
    import time
    from datetime import datetime, timezone

    import torch

    from robustfer.engine.config import load_config
    from robustfer.engine.evaluate import cpu_name
    from robustfer.models import create_model

    torch.set_num_threads(threads)
    models = {}
    for row in rows:
        cfg = load_config(recipe_for(row))
        model = create_model(cfg.model.name, num_classes=cfg.data.num_classes, in_chans=cfg.data.in_chans,
                             **cfg.model.options).eval()
        x = torch.zeros(1, cfg.data.in_chans, cfg.data.input_size, cfg.data.input_size)
        kw = {"landmarks": torch.full((1, 5, 2), cfg.data.input_size / 2)} if cfg.model.options.get(
            "regions") == "landmarks" else {}
        models[row] = (model, x, kw)
    per: dict[str, list[float]] = {r: [] for r in rows}
    with torch.inference_mode():
        for _ in range(rounds):
            for row, (model, x, kw) in models.items():
                for _ in range(5):
                    model(x, **kw)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model(x, **kw)
                    times.append(1000 * (time.perf_counter() - t0))
                per[row].append(statistics.median(times))
    return {"threads": threads, "repeats": repeats, "rounds": rounds,
            "processor": cpu_name() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rows": {r: {"ms_per_face": round(statistics.median(v), 3), "round_medians": [round(x, 3) for x in v],
                         "params": sum(q.numel() for q in models[r][0].parameters())} for r, v in per.items()}}


def read_latency(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def show_table(args: argparse.Namespace) -> None:
    text = table(read_lines(args.results), read_latency(args.latency_file),
                 COMPACT_COLUMNS if args.compact else COLUMNS)
    print(text, end="")
    if args.table_out:
        args.table_out.parent.mkdir(parents=True, exist_ok=True)
        args.table_out.write_text(text)


def _recipe(row: str, args: argparse.Namespace) -> str:
    return os.path.relpath(recipe_for(row, args.gpu), REPO)


def _log(run_dir: Path, args: argparse.Namespace) -> Path:
    return args.output_dir / f"{run_dir.name}.log"


def train_queue(queue: list[tuple[str, str, int, Path, list[str]]], args: argparse.Namespace) -> list[str]:
    """Train the queued runs, ``args.jobs`` at a time, each in its own process with its own log,
    in queue order; record each in the results file as it finishes. Returns the failed runs' names."""
    failed: list[str] = []
    running: list[tuple[subprocess.Popen, Any, tuple[str, str, int, Path, list[str]]]] = []
    todo = list(queue)
    while todo or running:
        while todo and len(running) < args.jobs:
            item = todo.pop(0)
            tag, _, _, run_dir, cmd = item
            log = _log(run_dir, args)
            how = "resuming from last.pt" if (run_dir / "last.pt").is_file() else "training"
            print(f"{tag}: {how} (log: {log})", flush=True)
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "a")
            running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), fh, item))
        done = [r for r in running if r[0].poll() is not None]
        if not done:
            time.sleep(0.5)
            continue
        for entry in done:
            running.remove(entry)
            proc, fh, (tag, row, seed, run_dir, _) = entry
            fh.close()
            if proc.returncode != 0 or not (run_dir / "report.json").is_file():
                print(f"{tag}: failed (exit {proc.returncode}); see {_log(run_dir, args)}",
                      file=sys.stderr, flush=True)
                failed.append(run_dir.name)
                continue
            record(args.results, summarize(run_dir, row, seed, _recipe(row, args), list(args.override)))
            print(f"{tag}: finished, recorded in {args.results}", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        show_table(args)
        return 0
    if args.latency:
        lat = measure_latency(list(dict.fromkeys(args.rows)), repeats=args.latency_repeats)
        args.latency_file.parent.mkdir(parents=True, exist_ok=True)
        args.latency_file.write_text(json.dumps(lat, indent=1, sort_keys=True) + "\n")
        for row, v in lat["rows"].items():
            print(f"{row}: {v['ms_per_face']:.2f} ms/face (rounds: {v['round_medians']})")
        print(f"wrote {args.latency_file}")
        return 0
    rows = list(dict.fromkeys(args.rows))
    if args.gpu:
        missing = [recipe_for(r, True).name for r in rows if not recipe_for(r, True).is_file()]
        if missing:
            print(f"--gpu: no GPU counterpart for {', '.join(missing)} in {RECIPES}; add it "
                  "(base: [cmp_<row>.yaml, _base/cmp_gpu.yaml]) or leave the row out (--rows).",
                  file=sys.stderr)
            return 2
    pairs = plan(rows, parse_seeds(args.seeds, rows))
    lacking = missing_inputs(pairs, args)
    if lacking and not args.dry_run:
        needing = sorted({r for r, s in pairs if set(missing_inputs([(r, s)], args)) & set(lacking)})
        print(f"missing {', '.join(lacking)} (read from {Path.cwd()}): write the annotate-pose files "
              "(pose labels and landmarks) first, from this folder:\n  for s in train valid test; do "
              "robustfer annotate-pose ferplus:$s --data-root DATA --out poses/ferplus_$s.csv; done\n"
              f"or leave out the rows that read them (--rows): {', '.join(needing)}.", file=sys.stderr)
        return 2
    if args.jobs > 1 and not any(o.startswith("train.threads=") for o in args.override):
        # the cores shared out between the runs at once, unless the command line says otherwise
        args.override.append(f"train.threads={max(1, (os.cpu_count() or 1) // args.jobs)}")
        print(f"--jobs {args.jobs}: {args.override[-1]} for every run", flush=True)
    failed: list[str] = []
    recorded = {(o.get("row"), o.get("seed"), o.get("recipe_hash")) for o in read_lines(args.results)}
    queue: list[tuple[str, str, int, Path, list[str]]] = []  # (tag, row, seed, run dir, command)
    for k, (row, seed) in enumerate(pairs, 1):
        name = run_name(row, seed)
        tag = f"[{k}/{len(pairs)}] {name}"
        run_dir = args.output_dir / name
        cmd = train_command(row, seed, args)
        want = recipe_hash(resolved(row, seed, args).to_dict())
        if not args.retrain_recorded and not run_dir.is_dir() and (row, seed, want) in recorded:
            print(f"{'# ' if args.dry_run else ''}{tag}: recorded in {args.results} (hash {want}), skipped; "
                  "--retrain-recorded trains it again")
            continue
        if (run_dir / "report.json").is_file():
            have = recipe_hash(run_config(run_dir))
            if have != want:
                print(f"{tag}: finished with another config (hash {have}, the recipe now "
                      f"gives {want}); not recorded. Move {run_dir} away to train it again.", file=sys.stderr)
                failed.append(name)
            elif args.dry_run:  # a finished folder is only recorded
                print(f"# {tag}: finished in {run_dir}, recorded, not trained")
            else:
                print(f"{tag}: finished, skipped")
                record(args.results, summarize(run_dir, row, seed, _recipe(row, args), list(args.override)))
        elif args.dry_run:  # the runs it would train, in order
            print(" ".join(cmd))
        else:
            queue.append((tag, row, seed, run_dir, cmd))
    failed += train_queue(queue, args)
    if args.dry_run:
        return 0
    print(f"\nresults: {args.results}\n")
    show_table(args)
    if failed:
        print(f"not finished: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
