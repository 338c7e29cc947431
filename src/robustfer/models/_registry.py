"""Model registry: every FER model is built by name (``create_model("resnet18")``).

A model family is one class and one typed configuration, a frozen dataclass of the family's
options with their defaults (:class:`ModelConfig`). A registered name is the family's class
plus a default configuration, so variants differ only in their defaults::

    register_model("phanet_compact", config=PhaNetConfig(depth=13, ...), description="...")(PhaNet)

``create_model(name, num_classes, in_chans, **options)`` replaces fields of the registered
default with ``options`` (:func:`model_config`) and calls ``cls(config, num_classes=...,
in_chans=...)``. The option names are the configuration's fields, so an unknown option is
refused with the valid ones listed, and the values are type-checked on the way in (YAML's
lists become tuples, integers become floats where a number is expected).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import nn

from robustfer.errors import ModelError

ModelBuilder = Callable[..., nn.Module]
C = TypeVar("C", bound="ModelConfig")


# ---------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class ModelConfig:
    """Base of the model families' configurations (frozen dataclasses; no fields of its own).

    On construction (and on :func:`dataclasses.replace`) every field is checked against its
    type annotation and normalised: lists become tuples (``convs_per_stage: [1, 2, 2, 2]``
    from a recipe), integers become floats for float fields, ``None`` only where the type
    allows it. Supported annotations: ``bool``, ``int``, ``float``, ``str``, ``None``, unions
    of them and ``tuple[...]`` of them; fields of other types are taken as given.

    Attributes:
        pinned: fields that a registered name fixes (the architecture it stands for, e.g. the
            trunk of ``ran_resnet18``): they are not options of ``create_model``.
    """

    pinned: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            default = None if f.default is dataclasses.MISSING else f.default
            value = _checked(type(self), f.name, getattr(self, f.name), default)
            object.__setattr__(self, f.name, value)

    def option_names(self) -> tuple[str, ...]:
        """The names ``create_model`` accepts as options for this configuration, in field order."""
        return tuple(f.name for f in dataclasses.fields(self) if f.name not in self.pinned)

    def with_options(self: C, **options: Any) -> C:
        """A copy with ``options`` replaced, checked as :meth:`option_names` and the field types say.

        Raises:
            ModelError: on an option that is not one of :meth:`option_names` (the message lists
                them) or a value of the wrong type.
        """
        _check_options(type(self).__name__, self.option_names(), options)
        return dataclasses.replace(self, **options)


def _check_options(subject: str, known: tuple[str, ...], options: dict[str, Any]) -> None:
    """ModelError naming the options not in ``known``, and listing ``known``."""
    unknown = [k for k in options if k not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelError(f"{subject} has no option {', '.join(map(repr, unknown))}{hint}; its options are "
                         f"{list(known) or 'none'}.")


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _checked(cls: type, name: str, value: Any, example: Any) -> Any:
    """``value`` of field ``name`` of config class ``cls``, converted to the field's type.

    Raises:
        ModelError: when it does not fit the type; the message shows ``example`` (unless None).
    """
    hint = _field_types(cls)[name]
    ok, converted = _convert(value, hint)
    if not ok:
        shown = list(example) if isinstance(example, tuple) else example
        eg = "" if example is None else f", e.g. {shown!r}"
        raise ModelError(f"option {name}={value!r} must be {_describe(hint)}{eg} ({cls.__name__}).")
    return converted


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(fits, value converted)`` of ``value`` for the type annotation ``hint``."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        for arm in typing.get_args(hint):
            ok, out = _convert(value, arm)
            if ok:
                return True, out
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False, value
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        elif len(args) == len(value):
            item_types = list(args)
        else:
            return False, value
        items = [_convert(v, t) for v, t in zip(value, item_types)]
        if not all(ok for ok, _ in items):
            return False, value
        return True, tuple(v for _, v in items)
    return True, value  # any other annotation: as given


def _describe(hint: Any, plural: bool = False) -> str:
    """A type annotation in words, for error messages (``tuple[float, float]`` -> "a list of 2 numbers")."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(a, plural) for a in typing.get_args(hint))
    words = {type(None): ("None (null)", "None"), bool: ("true or false", "booleans"),
             int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings")}
    if hint in words:
        return words[hint][plural]
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            inner = _describe(args[0], plural=True)
            return f"lists of {inner}" if plural else f"a list of {inner}"
        if len(set(args)) == 1:
            inner = f"{len(args)} {_describe(args[0], plural=True)}"
        else:
            inner = ", ".join(_describe(a) for a in args)
        return f"lists of {inner}" if plural else f"a list of {inner}"
    return getattr(hint, "__name__", str(hint))


# ---------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    Attributes:
        name: the registry name.
        build: the family's class (or a builder), called ``build(config, num_classes=...,
            in_chans=...)``, or ``build(num_classes=..., in_chans=...)`` without a config.
        description: one line for ``robustfer models``.
        config: the default configuration; None for a model without options.
    """

    name: str
    build: ModelBuilder
    description: str
    config: ModelConfig | None = None


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, description: str = "", *,
                   config: ModelConfig | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a model family's class (or any builder) under ``name``.

    Args:
        name: registry name.
        description: one line for ``robustfer models``; default the first line of the
            builder's docstring.
        config: the variant's default configuration; ``create_model`` replaces its fields
            with the options it gets and calls ``build(config, num_classes=..., in_chans=...)``.
            Without one, the model takes no options: ``build(num_classes=..., in_chans=...)``.

    Raises:
        ValueError: when ``name`` is already registered.
        TypeError: when ``config`` is not a :class:`ModelConfig`.
    """
    if config is not None and not isinstance(config, ModelConfig):
        raise TypeError(f"model {name!r}: config must be a ModelConfig dataclass, "
                        f"got {type(config).__name__}.")

    def deco(fn: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        _MODELS[name] = ModelInfo(name, fn, doc, config)
        return fn

    return deco


def _ensure_models() -> None:
    import robustfer.models  # noqa: F401  (importing registers the built-in models)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    _ensure_models()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; an unknown name lists the close matches."""
    _ensure_models()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_MODELS))} "
            "(`robustfer models`)."
        )
    return _MODELS[name]


def model_config(name: str, **options: Any) -> ModelConfig:
    """The configuration ``create_model(name, **options)`` builds: the registered default with
    ``options`` replaced.

    Raises:
        ModelError: on an unknown name, an option the model does not take (the message lists
            those it takes) or a value of the wrong type; also for a model without options.
    """
    info = model_info(name)
    if info.config is None:
        raise ModelError(f"model {name!r} has no configuration (it takes no options).")
    _check_options(f"model {name!r}", info.config.option_names(), options)
    try:
        for k, v in options.items():  # checked here first so that errors show this model's default
            _checked(type(info.config), k, v, getattr(info.config, k))
        return dataclasses.replace(info.config, **options)
    except ModelError as e:
        raise ModelError(f"model {name!r}: {e}") from None


def create_model(
    name: str, num_classes: int = 8, in_chans: int = 1, **options: Any
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name, e.g. ``"resnet18"`` or ``"compact_cnn"``.
        num_classes: size of the expression head (7 or 8 in robustfer's label spaces).
        in_chans: input channels (1 for grayscale FER2013/FERPlus, 3 for RGB datasets).
        **options: fields of the model's configuration (width, stem stride, dropout, ...);
            :func:`model_config` shows them with their defaults.

    Raises:
        ModelError: on an unknown name, an option the model does not take or a bad value.
    """
    info = model_info(name)
    if info.config is None:
        _check_options(f"model {name!r}", (), options)
        return info.build(num_classes=num_classes, in_chans=in_chans)
    return info.build(model_config(name, **options), num_classes=num_classes, in_chans=in_chans)
