"""The ``robustfer`` command line: ``train``, ``evaluate``, ``datasets``, ``models``.

Every subcommand is a thin wrapper over the Python API, and :func:`main` takes ``argv`` so
tests call it directly. Errors on user input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import yaml

from robustfer.errors import RobustferError


def _cmd_train(args: argparse.Namespace) -> int:
    from robustfer.engine.config import load_config
    from robustfer.engine.train import train

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.name:
        overrides.append(f"name={args.name}")
    cfg = load_config(args.config, overrides)
    res = train(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 only
        print(f"run folder: {res['run_dir']} (best.safetensors, last.pt, metrics.csv, report.json)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from robustfer.engine.train import evaluate_checkpoint

    overrides = {}
    if args.occluders is not None:
        overrides["occluders"] = args.occluders
    if args.occlusion_seed is not None:
        overrides["occlusion_seed"] = args.occlusion_seed
    if args.occlusion_on is not None:
        overrides["occlusion_on"] = args.occlusion_on
    evaluate_checkpoint(args.checkpoint, args.data or [], args.data_root, args.out,
                        overrides, device=args.device, progress=not args.no_progress)
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from robustfer.data import build_dataset, get_dataset_info, list_datasets

    if args.action == "list" or args.name is None:
        for info in list_datasets():
            subsets = f" subsets: {', '.join(sorted(info.subsets))}" if info.subsets else ""
            print(f"{info.name:<10} splits: {', '.join(info.splits):<22} {info.description}{subsets}")
        return 0
    info = get_dataset_info(args.name)
    from robustfer.engine.metrics import format_table

    rows = []
    classes: tuple[str, ...] = ()
    opts = {}
    for kv in args.option:
        if "=" not in kv:
            raise RobustferError(f"loader option {kv!r} is not of the form key=value (e.g. -o num_classes=7).")
        key, raw = kv.split("=", 1)
        opts[key] = yaml.safe_load(raw)  # numbers and booleans, as in recipes
    for split in info.splits:
        specs = [f"{info.name}:{split}"] + [f"{info.name}:{split}:{s}" for s in sorted(info.subsets)]
        for spec in specs:
            try:
                ds = build_dataset(spec, args.data_root, **opts)
            except RobustferError as e:
                if spec.count(":") == 2:
                    continue  # a subset defined for another split
                raise RobustferError(f"{spec}: {e}") from None
            classes = ds.classes
            rows.append({"data": spec, "n": len(ds), **ds.class_counts()})
    print(format_table(rows, ["data", "n", *classes]))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from robustfer.models import create_model, list_models, model_info

    for name in list_models(args.pattern):
        m = create_model(name)
        n = sum(p.numel() for p in m.parameters())
        print(f"{name:<16} {n / 1e6:6.2f} M params  {model_info(name).description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustfer", description="Pose- and occlusion-robust facial expression recognition.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a recipe (YAML) with overrides")
    t.add_argument("--config", "-c", help="recipe YAML, e.g. recipes/ferplus_compact_cnn_cpu.yaml")
    t.add_argument("--data-root", help="folder holding the dataset folders (default $ROBUSTFER_DATA)")
    t.add_argument("--output-dir", help="parent folder of run folders (default runs/)")
    t.add_argument("--name", help="run name (folder under output dir)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=3")
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint: test sets, subsets, occluders")
    e.add_argument("--checkpoint", required=True, help="best.safetensors (or a run folder)")
    e.add_argument("--data", nargs="*", help="dataset specs (default: the run's data.eval)")
    e.add_argument("--data-root", help="folder holding the dataset folders")
    e.add_argument("--out", help="output folder for report.json and plots")
    e.add_argument("--occluders", help="'default', 'none' or e.g. block:0.3,eye_band")
    e.add_argument("--occlusion-seed", type=int)
    e.add_argument("--occlusion-on", nargs="*", help="'first', 'all' or specs")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(fn=_cmd_evaluate)

    d = sub.add_parser("datasets", help="list datasets, or count a dataset's splits and subsets")
    d.add_argument("action", nargs="?", default="list", choices=["list", "inspect"])
    d.add_argument("name", nargs="?", help="dataset to inspect, e.g. ferplus")
    d.add_argument("--data-root", help="folder holding the dataset folders")
    d.add_argument("--option", "-o", action="append", default=[], help="loader option key=value")
    d.set_defaults(fn=_cmd_datasets)

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("pattern", nargs="?", default="*")
    m.set_defaults(fn=_cmd_models)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    # parse_known_args lets `train` overrides (section.key=value) come after options too
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.fn(args) or 0)
    except RobustferError as e:
        print(f"robustfer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustfer: interrupted; finished epochs are kept in last.pt (run again to resume).",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
