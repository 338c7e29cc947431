"""Recipe inheritance (`base:`): the committed recipes resolve to what they did before they were
rewritten on shared bases, and the merge rules, errors and override order of the loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robustfer.engine.config import Config, deep_merge, dump_config, load_config, resolve_recipe
from robustfer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RECIPE_DIR = REPO / "recipes"
RECIPES = sorted(RECIPE_DIR.glob("*.yaml"))
BASES = sorted((RECIPE_DIR / "_base").glob("*.yaml"))
# What every recipe resolved to before the recipes inherited from recipes/_base/ (recorded with
# `{p.name: load_config(p).to_dict() for p in recipes/*.yaml}`, written with json.dumps(indent=1,
# sort_keys=True)). A recipe added later joins it; a recipe or a default changed on purpose
# updates it the same way (and the diff of this file shows what the change does to each recipe).
RESOLVED = json.loads((Path(__file__).resolve().parent / "data" / "recipes_resolved.json").read_text())


def _write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# ------------------------------------------------------------------ the committed recipes
def test_every_recipe_has_a_recorded_resolution() -> None:
    assert sorted(RESOLVED) == [p.name for p in RECIPES]


@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_recipe_resolves_as_recorded(name: str) -> None:
    got = load_config(RECIPE_DIR / name).to_dict()
    assert got["name"] == RESOLVED[name]["name"] and got["output_dir"] == RESOLVED[name]["output_dir"]
    for section in RESOLVED[name]:
        assert got[section] == RESOLVED[name][section], f"{name}: section {section!r} changed"
    assert got == RESOLVED[name]


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_dumped_recipe_has_no_base_and_reads_back(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    text = dump_config(cfg)
    assert "base" not in yaml.safe_load(text)
    out = _write(tmp_path, "resolved.yaml", text)
    assert load_config(out) == cfg


def test_base_files_are_not_globbed_as_recipes() -> None:
    assert BASES, "no shared bases under recipes/_base/"
    assert not set(BASES) & set(RECIPES)
    for b in BASES:
        assert "name" not in yaml.safe_load(b.read_text()), f"{b.name}: a base must not set the run name"
        load_config(b)  # a base is a valid (partial) config on its own


# ------------------------------------------------------------------ merge semantics
def test_deep_merge_rules() -> None:
    base = {"a": {"x": 1, "y": [1, 2], "n": {"p": 1, "q": 2}}, "s": 1}
    over = {"a": {"y": [3], "n": {"q": 5}}, "s": None}
    assert deep_merge(base, over) == {"a": {"x": 1, "y": [3], "n": {"p": 1, "q": 5}}, "s": None}
    assert base == {"a": {"x": 1, "y": [1, 2], "n": {"p": 1, "q": 2}}, "s": 1}  # not modified


def test_nested_mappings_merge(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml",
           "name: parent\nmodel:\n  name: compact_cnn\n  options: {width: 0.5, drop_rate: 0.3}\n"
           "train: {epochs: 3, batch_size: 16}\n")
    child = _write(tmp_path, "child.yaml",
                   "base: parent.yaml\nname: child\nmodel:\n  options: {width: 1.0}\ntrain: {epochs: 5}\n")
    cfg = load_config(child)
    assert cfg.name == "child"
    assert cfg.model.name == "compact_cnn"
    assert cfg.model.options == {"width": 1.0, "drop_rate": 0.3}
    assert cfg.train.epochs == 5 and cfg.train.batch_size == 16


def test_lists_and_scalars_replace(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml",
           "data:\n  eval: [ferplus:test, ferplus:test:pose30]\n  pose_file: [a.csv, b.csv]\n"
           "model:\n  options: {phase_steps: [4, 1]}\n")
    child = _write(tmp_path, "child.yaml",
                   "base: parent.yaml\ndata:\n  eval: [ferplus:test]\n  pose_file: null\n"
                   "model:\n  options: {phase_steps: [2]}\n")
    cfg = load_config(child)
    assert cfg.data.eval == ["ferplus:test"]
    assert cfg.data.pose_file is None
    assert cfg.model.options == {"phase_steps": [2]}


def test_base_of_a_base(tmp_path: Path) -> None:
    _write(tmp_path, "grand.yaml", "optim: {name: adamw, lr: 0.003}\ntrain: {epochs: 3, seed: 7}\n")
    _write(tmp_path, "parent.yaml", "base: grand.yaml\ntrain: {epochs: 4}\n")
    child = _write(tmp_path, "child.yaml", "base: parent.yaml\noptim: {lr: 0.01}\n")
    cfg = load_config(child)
    assert cfg.optim.name == "adamw" and cfg.optim.lr == pytest.approx(0.01)
    assert cfg.train.epochs == 4 and cfg.train.seed == 7


def test_base_paths_are_relative_to_the_file_that_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, "shared/common.yaml", "train: {seed: 3}\n")
    _write(tmp_path, "shared/gpu.yaml", "base: common.yaml\ntrain: {amp: false}\n")  # next to gpu.yaml
    child = _write(tmp_path, "recipes/run.yaml", "base: ../shared/gpu.yaml\nname: run\n")
    monkeypatch.chdir(tmp_path / "shared")  # the working folder plays no part
    cfg = load_config(child)
    assert cfg.train.seed == 3 and cfg.train.amp is False and cfg.name == "run"


def test_list_of_bases_applies_in_order(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "train: {epochs: 1, seed: 1}\n")
    _write(tmp_path, "b.yaml", "train: {epochs: 2}\n")
    child = _write(tmp_path, "child.yaml", "base: [a.yaml, b.yaml]\n")
    cfg = load_config(child)
    assert cfg.train.epochs == 2 and cfg.train.seed == 1
    _write(tmp_path, "child2.yaml", "base: [b.yaml, a.yaml]\n")
    assert load_config(tmp_path / "child2.yaml").train.epochs == 1


def test_same_base_twice_is_not_a_cycle(tmp_path: Path) -> None:
    _write(tmp_path, "common.yaml", "train: {seed: 5}\n")
    _write(tmp_path, "a.yaml", "base: common.yaml\ntrain: {epochs: 2}\n")
    _write(tmp_path, "b.yaml", "base: common.yaml\ntrain: {batch_size: 8}\n")
    cfg = load_config(_write(tmp_path, "child.yaml", "base: [a.yaml, b.yaml]\n"))
    assert (cfg.train.seed, cfg.train.epochs, cfg.train.batch_size) == (5, 2, 8)


def test_overrides_apply_after_the_bases(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml", "model:\n  options: {width: 0.5, drop_rate: 0.3}\ntrain: {epochs: 3}\n")
    child = _write(tmp_path, "child.yaml", "base: parent.yaml\ntrain: {epochs: 4}\n")
    cfg = load_config(child, ["train.epochs=9", "model.options.width=1.0"])
    assert cfg.train.epochs == 9
    assert cfg.model.options == {"width": 1.0, "drop_rate": 0.3}


def test_base_is_not_in_the_resolved_config(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml", "train: {epochs: 3}\n")
    child = _write(tmp_path, "child.yaml", "base: parent.yaml\n")
    assert resolve_recipe(child) == {"train": {"epochs": 3}}
    cfg = load_config(child)
    assert "base" not in cfg.to_dict() and "base" not in yaml.safe_load(dump_config(cfg))
    assert cfg.to_dict() == load_config(overrides=["train.epochs=3"]).to_dict()


def test_empty_base_list_is_no_base(tmp_path: Path) -> None:
    child = _write(tmp_path, "child.yaml", "base: []\ntrain: {epochs: 3}\n")
    assert load_config(child).train.epochs == 3


# ------------------------------------------------------------------ errors
def test_missing_base_names_the_file_and_the_base(tmp_path: Path) -> None:
    child = _write(tmp_path, "child.yaml", "base: _base/nope.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    msg = str(e.value)
    assert str(child) in msg and "_base/nope.yaml" in msg and "does not exist" in msg
    assert "relative to the file" in msg


def test_cycle_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "base: b.yaml\n")
    _write(tmp_path, "b.yaml", "base: c.yaml\n")
    _write(tmp_path, "c.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "a.yaml")
    msg = str(e.value)
    assert "cycle" in msg and "a.yaml" in msg and "b.yaml" in msg and "c.yaml" in msg
    assert "remove" in msg


def test_a_file_that_is_its_own_base_is_a_cycle(tmp_path: Path) -> None:
    p = _write(tmp_path, "self.yaml", "base: ./self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(p)


def test_unknown_key_in_a_base_names_the_key_and_the_base(tmp_path: Path) -> None:
    base = _write(tmp_path, "_base/common.yaml", "optim:\n  weight_decy: 0.1\n")
    child = _write(tmp_path, "child.yaml", "base: _base/common.yaml\nname: child\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    msg = str(e.value)
    assert "'optim.weight_decy'" in msg and "Did you mean 'optim.weight_decay'?" in msg
    assert str(base.resolve()) in msg


def test_wrong_type_in_a_base_names_the_key(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml", "train: {epochs: many}\n")
    child = _write(tmp_path, "child.yaml", "base: parent.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert "'train.epochs'" in str(e.value) and "int" in str(e.value)


def test_bad_base_value(tmp_path: Path) -> None:
    child = _write(tmp_path, "child.yaml", "base: {file: parent.yaml}\n")
    with pytest.raises(ConfigError, match="'base' must be a YAML file name or a list"):
        load_config(child)


def test_invalid_yaml_in_a_base_names_the_base(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml", "train: {epochs: 3\n")
    child = _write(tmp_path, "child.yaml", "base: parent.yaml\n")
    with pytest.raises(ConfigError, match=r"parent\.yaml is not valid YAML"):
        load_config(child)


def test_base_is_not_a_valid_override_or_checkpoint_key() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        load_config(overrides=["base=x.yaml"])
    assert "base" not in Config().to_dict()
