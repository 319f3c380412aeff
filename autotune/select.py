"""Which config a launch uses: an active ``override_config``, else the stores, else the kernel's default.

Apart from the registry because it reads the stores (store.py), which read the registry.
"""
from __future__ import annotations

import contextlib
import contextvars

from . import store
from .registry import KERNELS
from .targets import Target

_overrides: contextvars.ContextVar[dict] = contextvars.ContextVar("atlas_config_overrides", default={})


@contextlib.contextmanager
def override_config(kernel: str, config: dict):
    """Force ``config`` for ``kernel`` inside the block (tests, tuning)."""
    token = _overrides.set({**_overrides.get(), kernel: dict(config)})
    try:
        yield
    finally:
        _overrides.reset(token)


def forced_config(kernel: str):
    """The config an active ``override_config`` forces for ``kernel``, or None."""
    return _overrides.get().get(kernel)


def pick_config(kernel: str, target: Target, variant: str, shape_key: tuple = (), **dims) -> dict:
    """The config a launch of ``kernel`` uses on ``target``.

    shape_key: the shape's bucket (KernelSpec.tuning.bucket); () matches only
        store entries tuned for every shape.
    dims: the launch's shape as the dims its Tuning declares (pick_config(..., m=m, k=k, n=n)), bucketed
        by KernelSpec.tuning.key into shape_key (ignored for a kernel without a tuning harness).
    Order: an active override_config, then the user's store, then the shipped
    store (exact shape bucket first, then a shape-less entry), then the derived
    default (KernelSpec.default). Never tunes; stores are cached in memory.
    """
    forced = forced_config(kernel)
    if forced is not None:
        return forced
    if dims and KERNELS[kernel].tuning is not None:
        shape_key = KERNELS[kernel].tuning.key(**dims)
    return dict(store.resolve(kernel, target, variant, tuple(shape_key)).config)
