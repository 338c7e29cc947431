"""Models: a registry of FER models that all return :class:`ModelOutput`."""

from robustfer.models import aha, baselines, phanet, ran, scan_cci  # noqa: F401  (importing registers the models)
from robustfer.models._registry import create_model, list_models, model_info, register_model
from robustfer.models.output import ModelOutput

__all__ = ["ModelOutput", "create_model", "list_models", "model_info", "register_model"]
