"""Architectures, registered by name. Importing this package registers every model file; it imports
no torch until a module is built."""

from alexnet.models import alexnet, alexnet_cifar, vgg  # noqa: F401  (registers the builders)
from alexnet.models.registry import (
    ModelSpec,
    create_model,
    get_architecture,
    get_model,
    list_models,
    model_spec,
    register,
)

__all__ = ["ModelSpec", "create_model", "get_architecture", "get_model", "list_models", "model_spec", "register"]
