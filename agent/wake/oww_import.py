"""openWakeWord's `Model` without scipy and scikit-learn in memory, and without onnxruntime's arena.

`import openwakeword` runs the package's `__init__`, which imports `custom_verifier_model` (a tool to
train verifier models), which imports scipy and scikit-learn: about 80 MB resident on a 64-bit Pi,
half of what the whole agent needs while it listens, for code a device never runs (`Model` does not
use it; a custom verifier model, if one is ever configured, is unpickled and brings sklearn with it).

So, before the package is first imported, `openwakeword.custom_verifier_model` is stood in for by a
module whose `train_custom_verifier` and every other attribute import the real module on first use:
nothing is lost, only deferred.

And openWakeWord's onnxruntime sessions are made without the CPU memory arena. The arena keeps, for
the life of the process, the peak of whatever a session ever ran: openWakeWord computes embeddings for
4 s of audio in one go when it starts, so the arena holds about 50 MB that the 80 ms frames of
listening never need again. Without the arena that peak goes through malloc and is freed, and
`agent.memory.trim_heap()` hands it back to the system (glibc keeps freed heap memory otherwise). Inference costs
the same CPU either way. Measured on x86_64: the listening process's RSS 190 -> 132 MB.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator
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


@contextlib.contextmanager
def without_cpu_arena() -> Iterator[None]:
    """onnxruntime sessions made inside (openWakeWord makes its own `SessionOptions`) get
    `enable_cpu_mem_arena = False`. Only for building models: the patch is undone on the way out."""
    import onnxruntime as ort

    original = ort.SessionOptions

    def options() -> Any:
        opts = original()
        opts.enable_cpu_mem_arena = False
        return opts

    ort.SessionOptions = options  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        ort.SessionOptions = original  # type: ignore[misc]
