"""Optional dependencies (``pip install 'alexnet[EXTRA]'``): imported when a command needs them, so every other
command starts without them."""

from __future__ import annotations

import importlib
from types import ModuleType

from alexnet.errors import InputError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise ``InputError`` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"this needs {module.split('.')[0]}: pip install 'alexnet[{extra}]'") from None
