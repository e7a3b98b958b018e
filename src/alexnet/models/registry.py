"""Models registered by name: the only way the CLI and the engine reach an architecture."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from alexnet.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about an architecture without building it."""

    name: str
    builder: Callable[..., nn.Module]
    image_size: int  # default input side, px
    description: str

    @property
    def adapts_to_image_size(self) -> bool:
        """Whether the builder sizes its head for the input (VGG does; AlexNet keeps torchvision's shapes)."""
        return "image_size" in inspect.signature(self.builder).parameters


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, image_size: int, description: str) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Register a keyword-only builder under ``name``; a duplicate name raises ``ValueError``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, builder, image_size, description)
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of every registered architecture, in registration order."""
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an unknown name raises ``InputError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


def get_model(name: str, *, image_size: int | None = None, **kwargs) -> nn.Module:
    """Build the architecture registered as ``name``.

    ``image_size`` reaches only builders whose head depends on it (VGG); the others accept any input
    their layers can take. Other keyword arguments go to the builder unchanged; one it does not take
    raises ``InputError``.
    """
    spec = model_spec(name)
    if image_size is not None and spec.adapts_to_image_size:
        kwargs["image_size"] = image_size
    accepted = inspect.signature(spec.builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"model {name!r} takes no option {', '.join(unknown)}; it takes {', '.join(accepted)}")
    return spec.builder(**kwargs)


create_model = get_model
