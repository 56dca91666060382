"""Optional dependencies: import one, or say in one line which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from pvdetect.errors import ConfigError

__all__ = ["require"]


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``; when it is missing, a :class:`ConfigError` naming the extra.

    Args:
        module: the package to import (``spandrel``).
        extra: the pvdetect extra that installs it (``sr``).
        feature: what needs it, for the message (``super-resolution upscaling``).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{feature} needs the {module} package: pip install 'pvdetect[{extra}]'"
        ) from None
