"""Typed model configurations: one frozen dataclass per family, variants as default configs.

``create_model(name, **options)`` replaces fields of the registered default configuration
(``model_config``); recipes and saved checkpoints pass these option names, so the table below
pins every registered variant's options, their order and their defaults.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustfer.errors import ModelError
from robustfer.models import (
    AhaConfig,
    CompactCnnConfig,
    ModelConfig,
    PhaNetConfig,
    RanConfig,
    ResNetConfig,
    ScanCciConfig,
    create_model,
    create_trunk,
    list_models,
    model_config,
    model_info,
    register_model,
)
from robustfer.models import _registry
from robustfer.models.aha import AHA
from robustfer.models.backbones import COMPACT_WIDTHS, TRUNKS, ResNet
from robustfer.models.baselines import CompactCNN, ResNetClassifier
from robustfer.models.phanet import PhaNet
from robustfer.models.ran import RAN
from robustfer.models.scan_cci import ScanCci

pytestmark = pytest.mark.usefixtures("one_thread")

_RESNET_TRUNK = {"width": 1.0, "stem_stride": 2, "stem_kernel": 7, "max_pool": True}
_RAN = {"regions": "fixed", "boxes": None, "num_regions": 5, "random_scale": (0.7, 0.95),
        "random_seed": 0, "landmark_side": 0.4, "crop_size": None, "relation": True,
        "softmax_weights": False, "drop_rate": 0.0}
_SCAN = {"shared_scan": True, "grid": 5, "cci_grid": 2, "hidden": None, "drop_rate": 0.0}
_AHA = {"branches": "glm", "attention": True, "fusion": "two_step", "head": "softmax", "crop_size": None,
        "region_side": 0.45, "boxes": None, "share_local": True, "lstm_hidden": None, "cos_scale": 30.0,
        "drop_rate": 0.0}
_PHANET = {"depth": 40, "growth_rate": 12, "bottleneck": False, "compression": 1.0, "stem_kernel": 7,
           "stem_stride": 2, "max_pool": True, "share_backbone": False, "num_pose_bins": 5, "pose": True,
           "scale_attention": True, "schedule": "alternate", "phase_steps": (4, 1),
           "side_range": (1 / 3, 1.0), "init_side": 0.75, "boxcar_k": 10.0, "apn_grid": 4, "apn_hidden": 128,
           "sal_hidden": None, "crop_size": None, "drop_rate": 0.0}

#: Every registered variant: (family class, config class, its options in order with their defaults).
DEFAULTS: dict[str, tuple[type[nn.Module], type[ModelConfig], dict]] = {
    "resnet18": (ResNetClassifier, ResNetConfig, {**_RESNET_TRUNK, "num_stages": 4, "drop_rate": 0.0}),
    "resnet50": (ResNetClassifier, ResNetConfig, {**_RESNET_TRUNK, "num_stages": 4, "drop_rate": 0.0}),
    "compact_cnn": (CompactCNN, CompactCnnConfig,
                    {"width": 1.0, "convs_per_stage": (1, 2, 2, 2), "drop_rate": 0.3}),
    "ran_resnet18": (RAN, RanConfig, {**_RESNET_TRUNK, **_RAN}),
    "ran_resnet50": (RAN, RanConfig, {**_RESNET_TRUNK, **_RAN}),
    "ran_compact_cnn": (RAN, RanConfig, {"width": 1.0, **_RAN}),
    "scan_cci_resnet50": (ScanCci, ScanCciConfig, {**_RESNET_TRUNK, **_SCAN}),
    "scan_cci_resnet18": (ScanCci, ScanCciConfig, {**_RESNET_TRUNK, **_SCAN}),
    "aha_resnet18": (AHA, AhaConfig, {**_RESNET_TRUNK, **_AHA}),
    "aha_compact_cnn": (AHA, AhaConfig, {"width": 1.0, "convs_per_stage": (1, 2, 2, 2), **_AHA}),
    "phanet_densenet40": (PhaNet, PhaNetConfig, _PHANET),
    "phanet_compact": (PhaNet, PhaNetConfig, {**_PHANET, "depth": 13, "max_pool": False,
                                              "side_range": (0.5, 1.0), "apn_grid": 3, "apn_hidden": 64,
                                              "crop_size": 32}),
}
#: The trunk each variant is built on (a pinned field, not an option).
BACKBONES = {"resnet18": "resnet18", "resnet50": "resnet50", "ran_resnet18": "resnet18",
             "ran_resnet50": "resnet50", "ran_compact_cnn": "compact_cnn", "scan_cci_resnet50": "resnet50",
             "scan_cci_resnet18": "resnet18", "aha_resnet18": "resnet18", "aha_compact_cnn": "compact_cnn"}

#: Cheap options per model for the build tests.
CHEAP: dict[str, dict] = {
    "resnet18": {"width": 0.125}, "resnet50": {"width": 0.125}, "compact_cnn": {"width": 0.25},
    "ran_resnet18": {"width": 0.125, "crop_size": 24}, "ran_resnet50": {"width": 0.125, "crop_size": 24},
    "ran_compact_cnn": {"width": 0.25}, "scan_cci_resnet50": {"width": 0.125},
    "scan_cci_resnet18": {"width": 0.125}, "aha_resnet18": {"width": 0.125},
    "aha_compact_cnn": {"width": 0.25},
    "phanet_densenet40": {"depth": 7, "growth_rate": 4}, "phanet_compact": {"depth": 7, "growth_rate": 4},
}
SIDE = {"scan_cci_resnet50": 48, "scan_cci_resnet18": 48, "aha_resnet18": 64}


def test_the_table_covers_every_registered_model() -> None:
    assert set(list_models()) == set(DEFAULTS)


# ---------------------------------------------------------------------- defaults
@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_of_each_variant(name: str) -> None:
    family, config_cls, expected = DEFAULTS[name]
    info = model_info(name)
    cfg = model_config(name)
    assert info.build is family and type(cfg) is config_cls and cfg == info.config
    assert list(cfg.option_names()) == list(expected)  # names and their order
    got = {k: getattr(cfg, k) for k in cfg.option_names()}
    assert got == expected
    if name in BACKBONES:
        assert cfg.backbone == BACKBONES[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_a_config_is_frozen_and_hashable(name: str) -> None:
    cfg = model_config(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.drop_rate = 0.5  # type: ignore[misc]
    assert hash(cfg) == hash(model_config(name))
    assert model_config(name, drop_rate=0.5) != cfg


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_an_unknown_option_is_named_and_the_valid_ones_listed(name: str) -> None:
    with pytest.raises(ModelError) as e:
        create_model(name, colour=1)
    msg = str(e.value)
    assert f"model {name!r}" in msg and "'colour'" in msg and "its options are" in msg
    listed = msg.split("its options are", 1)[1]
    for option in DEFAULTS[name][2]:
        assert repr(option) in listed, option


def test_a_misspelt_option_gets_a_suggestion() -> None:
    with pytest.raises(ModelError, match=r"has no option 'widht' \(did you mean 'width'\?\)"):
        create_model("resnet18", widht=0.5)


@pytest.mark.parametrize("name,option,value", [
    ("ran_resnet18", "backbone", "compact_cnn"),  # the registered name fixes the trunk
    ("scan_cci_resnet18", "backbone", "resnet50"),
    ("ran_compact_cnn", "stem_stride", 1),  # the compact CNN has no ResNet stem
    ("aha_compact_cnn", "max_pool", False),
    ("aha_resnet18", "convs_per_stage", [1, 1, 1, 1]),  # a ResNet has no convs_per_stage
    ("ran_compact_cnn", "convs_per_stage", [1, 1, 1, 1]),  # RAN's compact trunk is fixed
])
def test_pinned_fields_and_other_trunks_options_are_refused(name: str, option: str, value: object) -> None:
    with pytest.raises(ModelError, match=f"has no option '{option}'"):
        create_model(name, **{option: value})


def test_values_are_converted_to_the_field_types() -> None:
    """YAML and JSON give lists and integers; configs hold tuples and floats."""
    cfg = model_config("compact_cnn", width=1, convs_per_stage=[1, 2, 2, 2])
    assert cfg == CompactCnnConfig() and isinstance(cfg.width, float)
    assert model_config("compact_cnn", convs_per_stage=2).convs_per_stage == 2
    ran = model_config("ran_compact_cnn", boxes=[[0, 0, 1, 1], [0.2, 0.2, 0.8, 0.8]], random_scale=[0.6, 0.9])
    assert ran.boxes == ((0.0, 0.0, 1.0, 1.0), (0.2, 0.2, 0.8, 0.8)) and ran.random_scale == (0.6, 0.9)
    phanet = model_config("phanet_compact", phase_steps=[2, 3], side_range=[0.4, 1], crop_size=None)
    assert phanet.phase_steps == (2, 3) and phanet.side_range == (0.4, 1.0) and phanet.crop_size is None
    aha = model_config("aha_compact_cnn", convs_per_stage=[1, 1, 2, 2], lstm_hidden=16)
    assert aha.convs_per_stage == (1, 1, 2, 2) and aha.lstm_hidden == 16


@pytest.mark.parametrize("name,option,value,words", [
    ("phanet_compact", "side_range", [0.5], "a list of 2 numbers, e.g. [0.5, 1.0]"),  # this model's default
    ("phanet_compact", "phase_steps", [4, 1, 1], "a list of 2 integers, e.g. [4, 1]"),
    ("ran_compact_cnn", "crop_size", "32", "an integer or None"),
    ("scan_cci_resnet18", "grid", True, "an integer, e.g. 5"),  # a bool is not a count
    ("scan_cci_resnet18", "grid", 2.5, "an integer, e.g. 5"),
    ("compact_cnn", "convs_per_stage", [1, "a"], "an integer or a list of integers, e.g. [1, 2, 2, 2]"),
    ("resnet18", "max_pool", "yes", "true or false, e.g. True"),
    ("aha_compact_cnn", "branches", 3, "a string, e.g. 'glm'"),
    ("ran_resnet18", "boxes", [0, 0, 1, 1], "a list of lists of numbers or None"),
])
def test_a_value_of_the_wrong_type_is_refused(name: str, option: str, value: object, words: str) -> None:
    with pytest.raises(ModelError) as e:
        create_model(name, **{option: value})
    msg = str(e.value)
    assert f"model {name!r}" in msg and f"option {option}={value!r}" in msg and words in msg, msg


def test_with_options_checks_like_create_model() -> None:
    cfg = RanConfig(backbone="compact_cnn")
    assert cfg.with_options(width=0.5, crop_size=32) == RanConfig(backbone="compact_cnn", width=0.5,
                                                                   crop_size=32)
    with pytest.raises(ModelError, match="RanConfig has no option 'stem_stride'"):
        cfg.with_options(stem_stride=1)
    with pytest.raises(ModelError, match="backbone 'vgg16' is unknown; use one of resnet18"):
        RanConfig(backbone="vgg16")


# ---------------------------------------------------------------------- building
def _same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_a_model_built_from_its_config_equals_create_model(name: str) -> None:
    family, config_cls, _ = DEFAULTS[name]
    options = CHEAP[name]
    fields = {**dataclasses.asdict(model_info(name).config), **options}
    cfg = config_cls(**fields)  # the config written out by hand, not taken from the registry
    assert cfg == model_config(name, **options)
    torch.manual_seed(0)
    direct = family(cfg, num_classes=7, in_chans=3).eval()
    torch.manual_seed(0)
    built = create_model(name, num_classes=7, in_chans=3, **options).eval()
    assert type(built) is family and built.config == cfg
    _same_weights(direct, built)
    side = SIDE.get(name, 40)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(direct(x).logits, built(x).logits, rtol=0, atol=0)


def test_variants_differ_only_in_their_default_config() -> None:
    """``phanet_compact`` is ``phanet_densenet40`` with the compact defaults passed as options."""
    compact = dataclasses.asdict(model_config("phanet_compact"))
    torch.manual_seed(0)
    a = create_model("phanet_compact", growth_rate=4)
    torch.manual_seed(0)
    b = create_model("phanet_densenet40", **{**compact, "growth_rate": 4})
    _same_weights(a, b)
    torch.manual_seed(0)
    c = create_model("ran_resnet50", width=0.125)
    torch.manual_seed(0)
    d = RAN(RanConfig(backbone="resnet50", width=0.125))
    _same_weights(c, d)


def test_the_shipped_checkpoint_loads_from_its_saved_options() -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from robustfer.runtime.weights import pretrained_path

    path = pretrained_path("default")
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    options = json.loads(md["model_options"])  # JSON: convs_per_stage is a list
    model = create_model(md["model_name"], num_classes=8, in_chans=1, **options)
    model.load_state_dict(load_file(str(path)), strict=True)
    assert model.config == CompactCnnConfig(width=1.0, convs_per_stage=(1, 2, 2, 2), drop_rate=0.3)


# ---------------------------------------------------------------------- the trunk factory
@pytest.mark.parametrize("name", sorted(TRUNKS))
def test_create_trunk_builds_every_trunk_by_name(name: str) -> None:
    trunk, dim = create_trunk(name, 3, width=0.25)
    with torch.no_grad():
        out = trunk.eval()(torch.randn(1, 3, 32, 32))
    assert out.shape[1] == dim
    if name == "compact_cnn":
        assert dim == COMPACT_WIDTHS[-1] // 4 and out.shape[-1] == 2  # stride 16
    else:
        assert isinstance(trunk, ResNet)


def test_create_trunk_refuses_what_a_trunk_does_not_have() -> None:
    with pytest.raises(ModelError, match="trunk 'compact_cnn' has no option 'stem_stride'; its options are"):
        create_trunk("compact_cnn", 1, stem_stride=1)
    with pytest.raises(ModelError, match="trunk 'resnet18' has no option 'convs_per_stage'"):
        create_trunk("resnet18", 1, convs_per_stage=2)
    with pytest.raises(ModelError, match="backbone 'vgg' is unknown; use one of resnet18, resnet34"):
        create_trunk("vgg", 1)
    net, _ = create_trunk("resnet50", 1, width=0.125, num_stages=3)
    assert len(net.stages) == 3  # type: ignore[arg-type]


# ---------------------------------------------------------------------- registering a family
@dataclasses.dataclass(frozen=True)
class ToyConfig(ModelConfig):
    """A toy family's options."""

    hidden: int = 4
    scale: float = 1.0


class Toy(nn.Module):
    def __init__(self, cfg: ToyConfig, num_classes: int = 8, in_chans: int = 1) -> None:
        super().__init__()
        self.config = cfg
        self.body = nn.Linear(in_chans, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, num_classes)


def test_register_a_family_with_a_default_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))  # leave the real registry alone
    register_model("toy_small", "A toy.", config=ToyConfig(hidden=2))(Toy)
    toy = create_model("toy_small", num_classes=3, in_chans=5)
    assert toy.config == ToyConfig(hidden=2) and toy.head.out_features == 3 and toy.body.in_features == 5
    assert create_model("toy_small", hidden=6, scale=2).config == ToyConfig(hidden=6, scale=2.0)
    assert model_info("toy_small").description == "A toy."
    with pytest.raises(ModelError, match=r"no option 'depth'; its options are \['hidden', 'scale'\]"):
        create_model("toy_small", depth=3)
    with pytest.raises(TypeError, match="ModelConfig"):
        register_model("toy_dict", config={"hidden": 2})  # type: ignore[arg-type]

    def plain(num_classes: int = 8, in_chans: int = 1) -> nn.Module:
        """A model without options."""
        return nn.Linear(in_chans, num_classes)

    register_model("toy_plain")(plain)
    assert isinstance(create_model("toy_plain"), nn.Linear)
    assert model_info("toy_plain").description == "A model without options."
    with pytest.raises(ModelError, match="model 'toy_plain' has no option 'hidden'; its options are none"):
        create_model("toy_plain", hidden=2)
