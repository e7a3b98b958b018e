"""Models registered by name: the only way the CLI and the engine reach an architecture.

A registered function returns a plan (``alexnet.models.plan.Architecture``), which needs no torch;
``get_model`` builds the ``nn.Module`` from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alexnet.errors import InputError, first_line
from alexnet.models.plan import Architecture
from alexnet.models.weights import Weights

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about an architecture without building it."""

    name: str
    builder: Callable[..., Architecture]  # keyword-only options -> plan
    image_size: int  # default input side, px
    description: str
    weights: Mapping[str, Weights] = field(default_factory=dict)  # published checkpoints by tag ("imagenet")

    @property
    def adapts_to_image_size(self) -> bool:
        """Whether the builder sizes its head for the input (VGG does; AlexNet keeps torchvision's shapes)."""
        return "image_size" in inspect.signature(self.builder).parameters


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, image_size: int, description: str, weights: Mapping[str, Weights] | None = None
) -> Callable[[Callable[..., Architecture]], Callable]:
    """Register a keyword-only plan function under ``name``, with its published ``weights`` by tag; a
    duplicate name raises ``ValueError``."""

    def decorate(builder: Callable[..., Architecture]) -> Callable[..., Architecture]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, builder, image_size, description, dict(weights or {}))
        return builder

    return decorate


def published_weights(tag: str) -> dict[str, Weights]:
    """Every registered model that publishes weights under ``tag``, by model name."""
    return {name: spec.weights[tag] for name, spec in _REGISTRY.items() if tag in spec.weights}


def list_models() -> list[str]:
    """Names of every registered architecture, in registration order."""
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an unknown name raises ``InputError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


def get_architecture(name: str, *, image_size: int | None = None, **kwargs) -> Architecture:
    """The plan of the architecture registered as ``name``, without importing torch.

    ``image_size`` reaches only builders whose head depends on it (VGG); the others accept any input
    their layers can take. Other keyword arguments go to the builder unchanged; one it does not take
    raises ``InputError``, and so does a value the builder refuses (its ``ValueError`` or ``TypeError``), so that
    ``--model-options "{widths: []}"`` is a one-line error, not a traceback.
    """
    spec = model_spec(name)
    if image_size is not None and spec.adapts_to_image_size:
        kwargs["image_size"] = image_size
    accepted = inspect.signature(spec.builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"model {name!r} takes no option {', '.join(unknown)}; it takes {', '.join(accepted)}")
    try:
        return spec.builder(**kwargs)
    except InputError:
        raise
    except (ValueError, TypeError) as error:
        raise InputError(f"model {name!r}: {first_line(error)}") from None


def get_model(name: str, *, image_size: int | None = None, **kwargs) -> nn.Module:
    """Build and initialise the ``nn.Module`` registered as ``name`` (options as ``get_architecture``).

    Under ``torch.device("meta")`` it allocates and initialises nothing.
    """
    from alexnet.models.build import build  # torch: imported only when a module is wanted

    return build(get_architecture(name, image_size=image_size, **kwargs))


create_model = get_model
