"""alexnet: the AlexNet family and VGG, built exactly, trained fast on CPUs and GPUs."""

from __future__ import annotations

from alexnet.lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the module that defines it. Loaded on first use, so `alexnet --help` and commands that
# fail on their arguments answer without importing torch (~1.4 s here), and only training loads Lightning.
# The engine's package is `alexnet.training`, and `evaluate`/`predict` live in `alexnet.evaluation` and
# `alexnet.prediction`: a submodule named like a function would shadow DESIGN.md's `alexnet.train(config)`.
_EXPORTS = {
    "InputError": "alexnet.errors",
    "TrainingStopped": "alexnet.errors",
    "create_model": "alexnet.models",
    "get_model": "alexnet.models",
    "list_models": "alexnet.models",
    "model_spec": "alexnet.models",
    "load_dataset": "alexnet.data",
    "load_splits": "alexnet.data",
    "TrainConfig": "alexnet.training.config",
    "resolve_config": "alexnet.training.config",
    "train": "alexnet.training.run",
    "evaluate": "alexnet.evaluation",
    "predict": "alexnet.prediction",
    "load_classifier": "alexnet.inference",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
