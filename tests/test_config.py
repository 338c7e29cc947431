"""Typed config: defaults, recipes, overrides and the errors they raise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robustfer.engine.config import Config, config_from_dict, dump_config, load_config, resolve_recipe
from robustfer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_defaults_load() -> None:
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.to_dict() == Config().to_dict()
    assert cfg.model.name == "compact_cnn" and cfg.train.epochs == 14
    assert cfg.run_dir == Path("runs") / "experiment"


def test_there_are_recipes() -> None:
    assert RECIPES, f"no recipes under {REPO / 'recipes'}"


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_loads(path: Path) -> None:
    cfg = load_config(path)
    assert yaml.safe_load(path.read_text())["name"] == path.stem  # a recipe never inherits its name
    raw = resolve_recipe(path)  # the file with its `base:` chain merged in
    assert "base" not in raw
    assert cfg.name == raw["name"]
    # every value the recipe sets is in the resolved config (options merge into defaults)
    resolved = cfg.to_dict()
    for section, values in raw.items():
        if isinstance(values, dict):
            for k, v in values.items():
                got = resolved[section][k]
                if isinstance(v, dict):
                    assert {**got, **v} == got
                else:
                    assert got == v or got == pytest.approx(v), f"{section}.{k}"
        else:
            assert resolved[section] == values


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_builds_its_model_and_loss(path: Path) -> None:
    """A recipe's model options and loss options are ones the model and loss accept, and the
    model runs on one image of the recipe's input size."""
    import torch

    from robustfer.losses import build_loss
    from robustfer.models import create_model

    cfg = load_config(path)
    model = create_model(cfg.model.name, num_classes=cfg.data.num_classes, in_chans=cfg.data.in_chans,
                         **cfg.model.options)
    x = torch.zeros(1, cfg.data.in_chans, cfg.data.input_size, cfg.data.input_size)
    # a model that crops around landmarks gets five points (the recipe's landmark file's kind)
    kw = {"landmarks": torch.full((1, 5, 2), cfg.data.input_size / 2)} if cfg.model.options.get(
        "regions") == "landmarks" else {}
    with torch.no_grad():
        out = model.eval()(x, **kw)
    assert tuple(out.logits.shape) == (1, cfg.data.num_classes)
    build_loss(cfg.loss.name, target="hard", **cfg.loss.options)


def test_ferplus_recipe_values() -> None:
    cfg = load_config(REPO / "recipes" / "ferplus_compact_cnn_cpu.yaml")
    assert cfg.model.options == {"width": 1.0, "convs_per_stage": [1, 2, 2, 2], "drop_rate": 0.3}
    assert cfg.data.label_mode == "crossentropy"
    assert cfg.optim.name == "adamw" and cfg.optim.lr == pytest.approx(3e-3)
    assert isinstance(cfg.optim.lr, float)


def test_overrides() -> None:
    cfg = load_config(overrides=["train.epochs=3", "aug.scale=[0.8,1.2]", "name=quick"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert list(cfg.aug.scale) == [0.8, 1.2]
    assert cfg.name == "quick"


def test_int_override_of_float_key_becomes_float() -> None:
    cfg = load_config(overrides=["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_exponent_without_dot_is_a_float() -> None:
    # YAML 1.1 reads 1e-4 as a string; a float key takes it as the number it is
    assert load_config(overrides=["optim.lr=1e-4"]).optim.lr == 1e-4
    assert load_config(overrides=["train.checkpoint_minutes=1e-9"]).train.checkpoint_minutes == 1e-9


def test_optional_key_takes_none_and_value() -> None:
    assert load_config(overrides=["data.val=null"]).data.val is None
    assert load_config(overrides=["train.grad_clip=5"]).train.grad_clip == 5.0


def test_option_override_merges_with_recipe_options() -> None:
    recipe = REPO / "recipes" / "ferplus_compact_cnn_cpu.yaml"
    cfg = load_config(recipe, ["model.options.width=0.5"])
    assert cfg.model.options == {"width": 0.5, "convs_per_stage": [1, 2, 2, 2], "drop_rate": 0.3}
    # on the defaults (empty options) it just adds the key
    assert load_config(overrides=["model.options.width=0.5"]).model.options == {"width": 0.5}


def test_overrides_apply_in_order_after_the_file() -> None:
    recipe = REPO / "recipes" / "synthetic_quickstart.yaml"
    cfg = load_config(recipe, ["train.epochs=3", "train.epochs=5"])
    assert cfg.train.epochs == 5


def test_unknown_key_suggests_close_match() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["train.epoch=3"])
    msg = str(e.value)
    assert "'train.epoch'" in msg and "Did you mean 'train.epochs'?" in msg


def test_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["trian.epochs=3"])
    msg = str(e.value)
    assert "'trian'" in msg and "Did you mean 'train'?" in msg


def test_unknown_key_in_a_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(p)


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.epochs=abc", "train.epochs", "int"),
        ("train.epochs=1.5", "train.epochs", "int"),
        ("train.amp=3", "train.amp", "bool"),
        ("optim.lr=fast", "optim.lr", "float"),
        ("aug.scale=0.9", "aug.scale", "list"),
        ("model.options=3", "model.options", "mapping"),
    ],
)
def test_wrong_type_names_key_and_expected_type(override: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    msg = str(e.value)
    assert repr(key) in msg and expected in msg


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="'train'"):
        load_config(overrides=["train=3"])


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["train.epochs"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_invalid_yaml(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("train: {epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p).to_dict() == Config().to_dict()


@pytest.mark.parametrize("path", [None, *RECIPES], ids=["defaults", *[p.name for p in RECIPES]])
def test_dict_round_trip(path: Path | None) -> None:
    cfg = load_config(path, ["model.options.width=0.5", "aug.scale=[0.8,1.2]"])
    d = cfg.to_dict()
    again = config_from_dict(d)
    assert again.to_dict() == d
    assert again == cfg  # dataclass equality: types survive too (tuples stay tuples)


@pytest.mark.parametrize("path", [None, *RECIPES], ids=["defaults", *[p.name for p in RECIPES]])
def test_dump_config_reads_back(path: Path | None, tmp_path: Path) -> None:
    cfg = load_config(path, ["train.epochs=3", "data.val=null"])
    text = dump_config(cfg)
    assert yaml.safe_load(text) == cfg.to_dict()
    out = tmp_path / "resolved.yaml"
    out.write_text(text)
    assert load_config(out).to_dict() == cfg.to_dict()
