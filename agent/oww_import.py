"""openWakeWord's `Model` without scipy and scikit-learn in memory.

`import openwakeword` runs the package's `__init__`, which imports `custom_verifier_model` (a tool to
train verifier models), which imports scipy and scikit-learn: about 80 MB resident on a 64-bit Pi,
half of what the whole agent needs while it listens, for code a device never runs (`Model` does not
use it; a custom verifier model, if one is ever configured, is unpickled and brings sklearn with it).

So, before the package is first imported, `openwakeword.custom_verifier_model` is stood in for by a
module whose `train_custom_verifier` and every other attribute import the real module on first use:
nothing is lost, only deferred.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

VERIFIER = "openwakeword.custom_verifier_model"


class _DeferredVerifier(types.ModuleType):
    """Stands in for `openwakeword.custom_verifier_model` until something uses it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system asks for __path__ and the like: not a use
            raise AttributeError(name)
        return getattr(_real_verifier(), name)


def _real_verifier() -> types.ModuleType:
    if isinstance(sys.modules.get(VERIFIER), _DeferredVerifier):
        del sys.modules[VERIFIER]
    return importlib.import_module(VERIFIER)


def _train_custom_verifier(*args: Any, **kwargs: Any) -> Any:
    return _real_verifier().train_custom_verifier(*args, **kwargs)


def model_class() -> type:
    """`openwakeword.model.Model`, imported without importing scipy and scikit-learn."""
    if "openwakeword" not in sys.modules and VERIFIER not in sys.modules:
        stub = _DeferredVerifier(VERIFIER, "deferred: imported on first use (see agent.oww_import)")
        stub.train_custom_verifier = _train_custom_verifier  # type: ignore[attr-defined]
        sys.modules[VERIFIER] = stub
    from openwakeword.model import Model

    return Model
