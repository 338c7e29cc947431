"""The ``robustfer`` command line: ``predict``, ``train``, ``evaluate``, ``export``, ``serve``,
``annotate-pose``, ``explain``, ``plot``, ``tsne``, ``datasets``, ``models``, ``calibrate``.

Every subcommand is a thin wrapper over the Python API, and :func:`main` takes ``argv`` so
tests call it directly. Errors on user input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from robustfer.errors import ConfigError, RobustferError


def _cmd_train(args: argparse.Namespace) -> int:
    import robustfer.inference  # noqa: F401  (registers the front end that cuts `align: true` data)
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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from robustfer.engine.evaluate import calibrate_checkpoint

    calibrate_checkpoint(args.checkpoint, args.data, args.data_root, args.out, args.device,
                         progress=not args.no_progress)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import robustfer.inference  # noqa: F401  (registers the front end for `+aligned` specs)
    from robustfer.engine.evaluate import evaluate_checkpoint

    overrides = {}
    if args.occluders is not None:
        overrides["occluders"] = args.occluders
    if args.occlusion_seed is not None:
        overrides["occlusion_seed"] = args.occlusion_seed
    if args.occlusion_on is not None:
        overrides["occlusion_on"] = args.occlusion_on
    elif args.data:  # the run's occlusion_on names the run's eval specs, not these
        overrides["occlusion_on"] = ["first"]
    if args.tta is not None:
        overrides["tta"] = args.tta
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


def _recognizer(args: argparse.Namespace, model: str | None = None) -> object:
    """The recognizer the model options ask for (``model`` instead of ``--model`` if given)."""
    from robustfer.inference import Recognizer

    kw: dict = {"detector": args.detector, "batch_size": args.batch_size}
    if getattr(args, "min_score", None) is not None:
        kw["min_score"] = args.min_score
    return Recognizer.from_pretrained(model or args.model, backend=args.backend, threads=args.threads, **kw)


def _cmd_predict(args: argparse.Namespace) -> int:
    from robustfer.errors import ConfigError
    from robustfer.inference.batch import run_predict, run_stream

    if args.stride < 1 or args.batch_size < 1:
        raise ConfigError(f"--stride ({args.stride}) and --batch-size ({args.batch_size}) must be >= 1.")
    if not 0.0 <= args.smooth < 1.0:
        raise ConfigError(f"--smooth {args.smooth}: use a value in [0, 1) (0 = raw probabilities).")
    live = args.camera if args.camera is not None else args.stream
    if live is not None and args.paths:
        raise ConfigError("give either files/folders or --camera/--stream, not both.")
    if live is None and not args.paths:
        raise ConfigError("give image/video files or folders, or --camera N / --stream URL.")
    rec = _recognizer(args)
    if live is not None:
        s = run_stream(live, rec, output=args.output, annotate=args.annotate, stride=args.stride,
                       smoothing=args.smooth, max_frames=args.max_frames, show=args.show, table=not args.quiet)
    else:
        s = run_predict(args.paths, rec, output=args.output, annotate=args.annotate, stride=args.stride,
                        resume=args.resume, detect=not args.no_detect, recursive=not args.no_recursive,
                        progress=not args.no_progress, table=not args.quiet, smoothing=args.smooth)
    parts = [f"{s.files} file(s)", f"{s.faces} face(s)"]
    if s.frames:
        parts.append(f"{s.frames} video frame(s), {s.tracks} track(s)")
    if s.skipped_done:
        parts.append(f"{s.skipped_done} already done (--resume)")
    if s.ignored:
        parts.append(f"{s.ignored} non-image file(s) in folders ignored")
    parts.append(f"{len(s.failed)} failed")
    print("robustfer predict: " + ", ".join(parts)
          + (f"; results in {args.output}" if args.output else "")
          + (f"; drawings in {args.annotate}" if args.annotate else ""), file=sys.stderr)
    return 1 if s.failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from robustfer.errors import ConfigError
    from robustfer.export import calibration_crops, export_onnx, quantize_onnx
    from robustfer.runtime.classifier import meta_from_onnx

    if args.int8 and not args.calibration:
        raise ConfigError("--int8 needs --calibration: a dataset spec of training images (e.g. "
                          "ferplus:train, with --data-root) or a folder of face crops.")
    if Path(args.checkpoint).suffix == ".onnx":
        if not args.int8:
            raise ConfigError(f"{args.checkpoint} is already ONNX; add --int8 --calibration ... to "
                              "quantise it, or give a best.safetensors to export.")
        out = Path(args.checkpoint)
    else:
        out = export_onnx(args.checkpoint, args.out, opset=args.opset)
        print(f"wrote {out} (dynamic batch; parity with PyTorch checked on a random batch)")
    if args.int8:
        pre = meta_from_onnx(out).preprocess
        calib = calibration_crops(args.calibration, args.data_root, pre, n=args.calibration_size)
        q = quantize_onnx(out, calib, method=args.calibration_method, reduce_range=not args.full_range_weights)
        print(f"wrote {q} (int8, {args.calibration_method} calibration on {len(calib)} crops of "
              f"{args.calibration}); measure it with: robustfer evaluate --checkpoint {q}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from robustfer.serve import serve

    mb = 1024 * 1024
    serve(_recognizer(args), host=args.host, port=args.port, graceful_shutdown_s=args.graceful_shutdown,
          model_loader=lambda name: _recognizer(args, name),  # other shipped models, loaded alike
          max_upload_bytes=int(args.max_upload_mb * mb),
          max_pixels=int(args.max_megapixels * 1e6), max_batch_files=args.max_batch_files,
          max_video_bytes=int(args.max_video_mb * mb), max_video_frames=args.max_video_frames,
          max_video_seconds=args.max_video_seconds, timeout_s=args.timeout,
          body_timeout_s=args.body_timeout, workers=args.workers,
          queue=args.queue)
    return 0


def _cmd_annotate_pose(args: argparse.Namespace) -> int:
    from robustfer.inference.posefile import annotate_pose

    annotate_pose(args.dataset, args.out, root=args.data_root, detector=args.detector,
                  upscale=args.upscale, progress=not args.no_progress)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from robustfer.explain import explain

    written, problems = explain(args.images, args.checkpoint, args.out, detect=not args.no_detect,
                                detector=args.detector)
    for w in written:
        print(w)
    for msg in problems:
        print(f"robustfer explain: {msg}", file=sys.stderr)
    return 1 if problems else 0


def _cmd_plot(args: argparse.Namespace) -> int:
    import csv

    from robustfer.engine.plots import DEFAULT_HISTORY_COLUMNS, plot_history_columns

    run = Path(args.run)
    log = run / "metrics.csv" if run.is_dir() else run
    if not log.is_file():
        raise ConfigError(f"{log} does not exist; give a run folder (holding metrics.csv) or a metrics.csv.")
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c.strip() for c in (args.columns or "").split(",") if c.strip()]
    columns = columns or list(DEFAULT_HISTORY_COLUMNS)
    out = Path(args.out) if args.out else log.parent / ("history_" + "_".join(columns)[:80] + ".png")
    print(plot_history_columns(rows, columns, out, ylabel=args.ylabel))
    return 0


def _cmd_tsne(args: argparse.Namespace) -> int:
    from robustfer.engine.embed import tsne_figure

    out = args.out or f"tsne_{args.data.replace(':', '_')}_{args.color}.png"
    print(tsne_figure(args.checkpoint, args.data, out, color=args.color, data_root=args.data_root,
                      pose_file=args.pose_file, max_items=args.max_items, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustfer", description="Pose- and occlusion-robust facial expression recognition.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", default="default",
                       help="'default' (shipped) or a best.safetensors / .onnx path")
        q.add_argument("--detector", default="blazeface",
                       help="blazeface (default: CNN detector + face mesh: landmarks and yaw/pitch/roll), "
                            "blazeface:thorough (also small faces; ~4x slower), blazeface:fast, haar, "
                            "haar:always, dlib, or yunet:MODEL.onnx")
        q.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "onnx-int8"],
                       help="auto (default): PyTorch when installed, else ONNX Runtime; onnx-int8: the "
                            "int8 model beside the weights (fastest on CPU, checked against float32 "
                            "on this CPU when loaded)")
        q.add_argument("--batch-size", type=int, default=64, help="face crops per forward pass")
        q.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
        q.add_argument("--min-score", type=float, help="drop detections scoring below this")

    pr = sub.add_parser("predict", help="faces, head pose and expressions in images, folders, videos")
    pr.add_argument("paths", nargs="*", help="image files, video files or folders (walked recursively)")
    pr.add_argument("--camera", help="read a camera instead of files: its index (0 = the first)")
    pr.add_argument("--stream", help="read a video stream or URL OpenCV opens (rtsp://..., http://...)")
    pr.add_argument("--max-frames", type=int, help="--camera/--stream: stop after this many frames")
    pr.add_argument("--show", action="store_true", help="--camera/--stream: live window (needs a display)")
    pr.add_argument("--smooth", type=float, default=0.0,
                    help="video: smooth each tracked face's probabilities over frames (EMA factor in "
                         "[0, 1), e.g. 0.6; default 0 = raw)")
    model_args(pr)
    pr.add_argument("--output", "-o", help="results file: .jsonl (one record per image/frame) or .csv (one row per face)")
    pr.add_argument("--annotate", help="folder for images/videos with boxes, labels and probabilities drawn")
    pr.add_argument("--stride", type=int, default=1, help="video: use every N-th frame")
    pr.add_argument("--resume", action="store_true", help="skip files already in --output")
    pr.add_argument("--no-detect", action="store_true", help="inputs are face crops: classify whole images")
    pr.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    pr.add_argument("--quiet", "-q", action="store_true", help="do not print the results table")
    pr.add_argument("--no-progress", action="store_true")
    pr.set_defaults(fn=_cmd_predict)

    x = sub.add_parser("export", help="export a checkpoint to ONNX (dynamic batch)")
    x.add_argument("--checkpoint", required=True, help="best.safetensors (or a run folder)")
    x.add_argument("--out", help="output file (default: next to the checkpoint, .onnx)")
    x.add_argument("--opset", type=int, default=18)
    x.add_argument("--int8", action="store_true",
                   help="also write NAME.int8.onnx, statically quantised (2-3x faster on CPU)")
    x.add_argument("--calibration", help="int8 calibration images: a dataset spec of training "
                   "images (ferplus:train) or a folder of face crops")
    x.add_argument("--calibration-size", type=int, default=1024, help="crops drawn for calibration")
    x.add_argument("--calibration-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    x.add_argument("--full-range-weights", action="store_true",
                   help="8-bit int8 weights instead of 7-bit: about 10 %% faster on VNNI CPUs, but wrong "
                        "on x86 CPUs without VNNI (saturating kernels); the default is safe everywhere")
    x.add_argument("--data-root", help="folder holding the dataset folders (for --calibration)")
    x.set_defaults(fn=_cmd_export)

    sv = sub.add_parser("serve", help="web page and HTTP API: photos, videos, webcam (open http://HOST:PORT/)")
    model_args(sv)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image upload (413 above)")
    sv.add_argument("--max-megapixels", type=float, default=40.0,
                    help="largest image, read from its header before decoding (422 above)")
    sv.add_argument("--max-batch-files", type=int, default=16, help="most files per /predict/batch request")
    sv.add_argument("--max-video-mb", type=float, default=100.0, help="largest video upload (413 above)")
    sv.add_argument("--max-video-frames", type=int, default=300,
                    help="most frames analysed per video, after --stride (longer videos: truncated)")
    sv.add_argument("--max-video-seconds", type=float, default=120.0, help="longest stretch of video analysed")
    sv.add_argument("--timeout", type=float, default=60.0, help="seconds per request, queueing included (504 above)")
    sv.add_argument("--body-timeout", type=float, default=30.0,
                    help="seconds to receive a request's whole body (408 above; stops slow uploads)")
    sv.add_argument("--workers", type=int, default=0,
                    help="inferences run at once (default 0: one per CPU core)")
    sv.add_argument("--queue", type=int, default=16,
                    help="requests that may wait for a worker; more get 503 with Retry-After")
    sv.add_argument("--graceful-shutdown", type=float, default=10.0,
                    help="seconds in-flight requests get to finish on Ctrl-C / SIGTERM")
    sv.set_defaults(fn=_cmd_serve)

    ap = sub.add_parser("annotate-pose", help="write a pose-label file (image id -> yaw, bin, five landmarks) for a dataset")
    ap.add_argument("dataset", help="dataset spec, e.g. ferplus:train")
    ap.add_argument("--out", required=True, help="CSV to write (id,yaw,pitch,roll,yaw_bin,method,landmarks)")
    ap.add_argument("--data-root", help="folder holding the dataset folders")
    ap.add_argument("--detector", default="blazeface",
                    help="blazeface (face mesh pose; default), dlib (5 landmarks) or haar (coarse bins)")
    ap.add_argument("--upscale", type=int, default=4, help="upscale small crops this much before detection")
    ap.add_argument("--no-progress", action="store_true")
    ap.set_defaults(fn=_cmd_annotate_pose)

    ex = sub.add_parser("explain", help="draw what a model attended to (RAN regions, SCAN-CCI maps) as PNGs")
    ex.add_argument("images", nargs="+", help="photos (faces are detected) or face crops (--no-detect)")
    ex.add_argument("--checkpoint", required=True,
                    help="best.safetensors, a run folder, or a shipped model's name (e.g. ran)")
    ex.add_argument("--out", default=".", help="folder for the PNGs (default: here); one per face")
    ex.add_argument("--no-detect", action="store_true", help="inputs are face crops: explain whole images")
    ex.add_argument("--detector", default="blazeface",
                    help="blazeface (default), blazeface:thorough, haar, haar:always, dlib, or yunet:MODEL.onnx")
    ex.set_defaults(fn=_cmd_explain)

    pl = sub.add_parser("plot", help="plot metrics.csv columns over epochs (losses, accuracies, ...)")
    pl.add_argument("run", help="run folder (holding metrics.csv) or a metrics.csv")
    pl.add_argument("--columns", default=None,
                    help="comma-separated columns (default: train_loss,val_loss,train_accuracy,val_accuracy, "
                         "which every run logs; e.g. train_c1,train_c2,train_c3 for PhaNet's scale weights)")
    pl.add_argument("--ylabel", default="value")
    pl.add_argument("--out", help="PNG to write (default: in the run folder)")
    pl.set_defaults(fn=_cmd_plot)

    ts = sub.add_parser("tsne", help="t-SNE of a model's features on a dataset, by expression or pose")
    ts.add_argument("--checkpoint", required=True, help="best.safetensors of a run")
    ts.add_argument("--data", required=True, help="dataset spec, e.g. ferplus:test")
    ts.add_argument("--color", default="expression", choices=["expression", "pose"])
    ts.add_argument("--pose-file", help="pose-label file from `robustfer annotate-pose` (for --color pose)")
    ts.add_argument("--data-root", help="folder holding the dataset folders")
    ts.add_argument("--max-items", type=int, default=2000, help="images drawn from the split (seeded)")
    ts.add_argument("--seed", type=int, default=0)
    ts.add_argument("--out", help="PNG to write")
    ts.set_defaults(fn=_cmd_tsne)

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
    e.add_argument("--occlusion-on", nargs="*",
                   help="'first', 'all' or specs (default: the run's, or 'first' with --data)")
    e.add_argument("--tta", choices=["none", "hflip"],
                   help="test-time augmentation (default: the run's eval.tta)")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(fn=_cmd_evaluate)

    c = sub.add_parser("calibrate", help="fit a checkpoint's temperature on a validation split (ECE)")
    c.add_argument("--checkpoint", required=True, help="best.safetensors (or a run folder)")
    c.add_argument("--data", help="validation spec (default: the run's data.val); test splits are refused")
    c.add_argument("--data-root", help="folder holding the dataset folders")
    c.add_argument("--out", help="write the calibrated checkpoint here (default: in place)")
    c.add_argument("--device", default="auto")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(fn=_cmd_calibrate)

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


#: Optional dependency -> the extra that installs it (a plain install is the inference runtime).
EXTRAS = {"torch": "train", "albumentations": "train", "matplotlib": "train", "sklearn": "train",
          "onnx": "train", "onnxscript": "train", "fastapi": "serve", "uvicorn": "serve",
          "multipart": "serve", "dlib": "dlib"}


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
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"robustfer {args.command}: needs {e.name}, which this install does not have: "
              f"pip install 'robustfer[{extra}]'" + (" (on a CPU-only machine install the CPU build of "
                                                     "torch first)" if extra == "train" else "") + ".",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustfer: interrupted; last.pt keeps the finished epochs and, within an epoch, the "
              "last save (every train.checkpoint_minutes): run the same command again to resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
