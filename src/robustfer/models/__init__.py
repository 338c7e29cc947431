"""Models: a registry of FER models that all return :class:`ModelOutput`."""

from robustfer.models import aha, baselines, phanet, ran, scan_cci  # noqa: F401  (importing registers the models)
from robustfer.models._registry import (
    ModelConfig,
    create_model,
    list_models,
    model_config,
    model_info,
    register_model,
)
from robustfer.models.aha import AhaConfig
from robustfer.models.backbones import TrunkConfig, create_trunk
from robustfer.models.baselines import CompactCnnConfig, ResNetConfig
from robustfer.models.output import ModelOutput
from robustfer.models.phanet import PhaNetConfig
from robustfer.models.ran import RanConfig
from robustfer.models.scan_cci import ScanCciConfig

__all__ = [
    "AhaConfig",
    "CompactCnnConfig",
    "ModelConfig",
    "ModelOutput",
    "PhaNetConfig",
    "RanConfig",
    "ResNetConfig",
    "ScanCciConfig",
    "TrunkConfig",
    "create_model",
    "create_trunk",
    "list_models",
    "model_config",
    "model_info",
    "register_model",
]
