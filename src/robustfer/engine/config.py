"""Typed experiment configuration: dataclasses loaded from YAML, overridable from the CLI.

A recipe is a YAML file whose sections mirror :class:`Config`. Command-line overrides are
``section.key=value`` strings (values parsed as YAML: ``train.epochs=3``,
``aug.scale=[0.8,1.2]``). An unknown section or key, or a value of the wrong type, is a
:class:`~robustfer.errors.ConfigError` that names the key and what was expected.

Recipe inheritance: a top-level ``base:`` key names another YAML file (or a list of them,
applied in order), relative to the file that names it. The bases are resolved first (a base
may have a base of its own) and the file's own keys are deep-merged on top: mappings merge
key by key (so ``model.options: {fusion: concat}`` changes one option and keeps the others),
lists and scalars replace. A missing base file or a cycle is a ConfigError. ``base`` itself is
not a config key: it is gone from the resolved config and from :func:`dump_config`. CLI
overrides apply after the whole chain. Shared bases live in ``recipes/_base/``, which is not
a runnable recipe folder::

    # recipes/ferplus_ran_compact_cpu_no_rb.yaml
    base: ferplus_ran_compact_cpu.yaml
    name: ferplus_ran_compact_cpu_no_rb
    loss:
      options: {rb_weight: 0.0}
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustfer.data.transforms import AugmentConfig
from robustfer.errors import ConfigError


@dataclass
class ModelConfig:
    """Which registered model to build, and its options."""

    name: str = "compact_cnn"
    options: dict[str, Any] = field(default_factory=dict)
    #: initial weights: a checkpoint (``.safetensors`` or a run folder, e.g. a self-supervised
    #: ``pretrain`` run); every tensor whose name and shape match is loaded, the rest stays
    #: freshly initialised (null: train from scratch).
    init: str | None = None


@dataclass
class DataConfig:
    """Datasets, label modes and preprocessing.

    ``train`` and ``val`` are dataset specs (``name:split[:subset]``). ``val`` selects the
    checkpoint and drives early stopping; a test split is refused there. When ``val`` is
    empty, a stratified ``val_fraction`` of train is carved out with ``val_seed``.
    ``eval`` lists the specs evaluated with the selected checkpoint after training.
    ``input_size`` .. ``crop_shift`` become the checkpoint's :class:`Preprocess`, which the
    inference front end follows (``crop_scale``/``crop_shift``: how to cut a face crop around a
    detected face so that it looks like the training crops). ``pose_file`` attaches head-pose
    labels from a ``robustfer annotate-pose`` CSV (or a list of them, e.g. one per split) to
    every dataset of the run (by sample id); relative paths are read from the working folder.
    ``landmark_file`` (the same files: annotate-pose writes the five points too) attaches each
    face's landmarks, for models that crop around them (RAN ``regions: landmarks``, AHA); faces
    it lacks (no face found, other datasets) get the five points of the FER2013 mesh template
    in their crop geometry -- where the front end's alignment puts them (``template_five``).
    ``extra_train`` adds more training datasets (see :func:`robustfer.engine.data.add_extra_train`):
    each a mapping ``{spec, weight (1.0), align (false), options ({})}``; ``weight`` is how often
    each of its images is drawn relative to an image of ``train``, ``align: true`` re-cuts its
    faces with the front end in the inference geometry (for photos and other crop styles).
    """

    root: str | None = None
    train: str = "ferplus:train"
    val: str | None = "ferplus:valid"
    eval: list[str] = field(default_factory=lambda: ["ferplus:test"])
    num_classes: int = 8
    label_mode: str = "majority"
    eval_label_mode: str = "majority"
    train_options: dict[str, Any] = field(default_factory=dict)
    eval_options: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.1
    val_seed: int = 0
    input_size: int = 48
    in_chans: int = 1
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    face_crop: str = "loose"
    crop_scale: float = 1.05
    crop_shift: float = 0.0
    num_workers: int = 2
    cache: bool = True
    balanced_sampling: bool = False
    pose_file: str | list[str] | None = None
    landmark_file: str | list[str] | None = None
    extra_train: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (stepped every iteration)."""

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0
    step_epochs: list[int] = field(default_factory=list)
    step_gamma: float = 0.1


@dataclass
class LossConfig:
    """Training loss: name in the loss registry and its options.

    ``target``: ``hard`` (cross-entropy on the label), ``soft`` (cross-entropy on the
    sample's soft target, FER+ *crossentropy*), ``sample`` (a one-hot label drawn from the
    soft target at every step, FER+ *probability*) or ``auto`` (FER+ label mode decides).
    """

    name: str = "ce"
    target: str = "auto"
    label_smoothing: float = 0.0
    class_weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Loop settings.

    ``amp`` trains under bf16 autocast on GPUs; ``amp_cpu`` does so on CPUs too (worth it on
    CPUs with AVX512-BF16/AMX: the compact CNN's training step goes from 89 to 151 images/s on
    the 2-core AMD EPYC here, ``benchmarks/train_throughput.py --amp-cpu``).

    ``last.pt`` is written after every epoch and, within an epoch, whenever
    ``checkpoint_minutes`` have passed since the last write (``null`` or 0: at epoch ends
    only), so a killed run loses at most that much work. Resuming mid-epoch skips the batches
    already trained on; with ``data.num_workers: 0`` the resumed run equals an uninterrupted one
    exactly (with workers, the rest of the epoch sees the same images under other augmentation
    draws).
    """

    epochs: int = 14
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_cpu: bool = False
    channels_last: bool = True
    select_metric: str = "accuracy"
    early_stopping_patience: int | None = None
    max_steps_per_epoch: int | None = None
    grad_clip: float | None = None
    resume: bool = True
    threads: int | None = None
    progress: bool = True
    checkpoint_minutes: float | None = 10.0
    #: decay of an EMA of the weights (e.g. 0.999; null: none). Validated every epoch next to
    #: the raw weights; whichever scores higher on validation is the epoch's candidate for best.
    ema: float | None = None
    #: mixup / CutMix Beta(alpha, alpha) parameters (0: off); with both > 0 each mixed batch
    #: uses one of them at random. ``mix_prob``: fraction of batches mixed.
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    #: weight of the clean/occluded consistency term (0: off). Each face is seen twice per
    #: step, clean and under a realistic occluder (``aug.occluder_kinds``), both with the same
    #: augmentation; loss = mean of both views' losses + weight * KL(p_clean || p_occluded).
    consistency: float = 0.0


@dataclass
class EvalConfig:
    """Evaluation after training (and of `robustfer evaluate`)."""

    batch_size: int = 256
    occluders: str = "default"
    occlusion_seed: int = 0
    occlusion_fill: str = "black"
    occlusion_on: list[str] = field(default_factory=lambda: ["first"])
    plots: bool = True
    tta: str = "none"
    #: After training, fit a temperature on the validation split (probabilities =
    #: softmax(logits / T)), store it in best.safetensors and report ECE before and after.
    calibrate: bool = True


@dataclass
class DistillConfig:
    """Knowledge distillation (:class:`robustfer.engine.regularize.TeacherEnsemble`).

    ``teachers``: checkpoints (``.safetensors``, run folders, or a shipped name such as
    ``default``) with the student's preprocessing and classes; empty: no distillation. The
    loss becomes ``(1 - weight) * loss + weight * T^2 * KL(mean teacher p^T || student p^T)``.
    """

    teachers: list[str] = field(default_factory=list)
    weight: float = 0.5
    temperature: float = 2.0


@dataclass
class PretrainConfig:
    """Self-supervised pretraining (:mod:`robustfer.engine.pretrain`), run by ``robustfer train``
    when ``method`` is set: the model learns from the training images without their labels and
    the run's ``best.safetensors`` holds the weights after the last epoch, for ``model.init``.

    ``method``: ``none`` or ``simclr`` (Chen et al., ICML 2020: two views of each face, NT-Xent
    loss at ``temperature`` on a ``hidden_dim`` -> ``proj_dim`` projection head of the model's
    features). ``crop_scale``: the smallest fraction of the face's area a view keeps (random
    resized crops on top of the recipe's ``aug``); ``erasing``: chance of a random erased box
    per view.
    """

    method: str = "none"
    temperature: float = 0.2
    proj_dim: int = 128
    hidden_dim: int = 512
    crop_scale: float = 0.35
    erasing: float = 0.25


@dataclass
class Config:
    """A whole experiment."""

    name: str = "experiment"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    @property
    def run_dir(self) -> Path:
        """``output_dir/name``: where checkpoints, logs and reports go."""
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


# ------------------------------------------------------------------ type checking
def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` where lossless, else raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    expected = getattr(tp, "__name__", str(tp))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}.")
        inner = args[0] if args else Any
        return type(value)(_check_type(v, inner, f"{key}[]") for v in value) if origin is list \
            else tuple(_check_type(v, inner, f"{key}[]") for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"config key {key!r} expects {expected}, got {value!r} ({type(value).__name__}).")


def _merge(obj: Any, data: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {key!r}.{hint} Valid keys here: {', '.join(sorted(names))}."
            )
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ConfigError(f"config section {key!r} must be a mapping, got {v!r}.")
            _merge(cur, v, f"{key}.")
        elif isinstance(cur, dict) and isinstance(v, dict):
            # option mappings merge, so `model.options.width=0.5` keeps the other options
            setattr(obj, k, {**cur, **v})
        else:
            setattr(obj, k, _check_type(v, hints[k], key))


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} is not of the form section.key=value (e.g. train.epochs=3)."
        )
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


BASE_KEY = "base"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge ``over`` onto ``base`` the way a recipe's keys merge onto its base's.

    Mappings merge key by key, recursively; any other value (a list, a scalar, ``None``)
    in ``over`` replaces the one in ``base``. Neither argument is modified.

    Args:
        base: The inherited mapping.
        over: The mapping whose values win.

    Returns:
        A new mapping.
    """
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_recipe_file(p: Path) -> dict[str, Any]:
    """The top-level mapping of one YAML file (``{}`` when empty)."""
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}.")
    return data


def _base_names(p: Path, value: Any) -> list[str]:
    """The ``base:`` entry of file ``p`` as a list of file names."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(
        f"config file {p}: '{BASE_KEY}' must be a YAML file name or a list of them (relative to "
        f"{p.parent}), got {value!r}."
    )


def _resolve(p: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """File ``p`` merged onto its bases; ``chain`` holds the files that led here (cycles)."""
    data = _read_recipe_file(p)
    bases = _base_names(p, data.pop(BASE_KEY, None))
    try:  # name the file that holds a bad key: the merged result would not say which one
        _merge(Config(), data, "")
    except ConfigError as e:
        raise ConfigError(f"config file {p}: {e}") from None
    merged: dict[str, Any] = {}
    for name in bases:
        bp = (p.parent / name).resolve()
        if bp in chain:
            loop = " -> ".join(str(q) for q in (*chain[chain.index(bp):], bp))
            raise ConfigError(
                f"config file {p}: '{BASE_KEY}: {name}' makes a cycle ({loop}); remove one of "
                f"these '{BASE_KEY}:' entries."
            )
        if not bp.is_file():
            raise ConfigError(
                f"config file {p}: its base {name!r} does not exist (looked for {bp}); base paths "
                f"are relative to the file that names them: fix the path or create the file."
            )
        merged = deep_merge(merged, _resolve(bp, (*chain, bp)))
    return deep_merge(merged, data)


def resolve_recipe(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe with its ``base:`` chain applied (not yet validated).

    Args:
        path: The recipe YAML file.

    Returns:
        The merged sections, without the ``base`` key.

    Raises:
        ConfigError: on a missing/malformed file or base, a cycle of bases, or an unknown
            key or wrong type in one of the files (the message names that file).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass a recipe such as recipes/*.yaml.")
    return _resolve(p, (p.resolve(),))


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> Config:
    """Build a :class:`Config` from defaults, an optional YAML recipe and overrides.

    The recipe's ``base:`` chain is resolved first (see :func:`resolve_recipe`), then the
    overrides apply in order.

    Raises:
        ConfigError: on a missing/malformed file, a missing base, a cycle of bases, an
            unknown key or a wrong type.
    """
    cfg = Config()
    if path is not None:
        _merge(cfg, resolve_recipe(path), "")
    for item in overrides or []:
        keys, value = _parse_override(item)
        nested: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            nested = {k: nested}
        _merge(cfg, nested, "")
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (checkpoints)."""
    cfg = Config()
    _merge(cfg, data, "")
    return cfg


def dump_config(cfg: Config) -> str:
    """YAML text of a resolved config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
