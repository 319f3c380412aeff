"""Kernel registry: each op declares its kernels, dtype variants and config space once.

The verification checks (Ascend lowering, CUDA compile), the tuning CLI and
the launchers all read this registry, so a new kernel is covered by every
check as soon as its op module registers it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

from . import verdicts
from .targets import Target

LAUNCH_OPTIONS = ("num_warps", "num_stages")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compile-time specialisation of a kernel.

    types: Triton type string ("*i8", "i32", "fp32", ...) for every
        non-constexpr argument.
    constexprs: values of the constexpr arguments that are not tuned
        (dtype switches, modes).
    needs_lock: why this variant needs a cross-core lock on Ascend; empty (all of ours): the Ascend check
        fails a compile that takes one.
    """

    label: str
    types: dict
    constexprs: dict = dataclasses.field(default_factory=dict)
    needs_lock: str = ""


@dataclasses.dataclass(frozen=True)
class Tuning:
    """How to measure a kernel on a device (optional part of a KernelSpec).

    dims: names of the shape dims, e.g. ("R", "C").
    bucket(shape) -> tuple: the store key of a shape dict; use pow2_bucket for
        dims that vary per call (m), exact values for model constants. The
        launcher passes the same tuple to pick_config(..., shape_key).
    make_call(shape, variant, device) -> zero-argument callable that launches the
        kernel once on fresh inputs of that shape (through the public op, so the
        launcher's config selection, and any override_config, applies) and
        returns its output.
    shapes: shapes tuned when the CLI is given no --shapes.
    work(target, variant, shape, config) -> candidates.Work: what the config does at that shape, for
        the cost model that ranks the space into a candidate list (None: the space's own order).
    covers(variant, shape) -> bool: whether a launch of that shape takes ``variant``'s config (e.g. the
        "-decode" variants only for m <= 16; variants the launcher never picks are not tuned).
    """

    dims: tuple
    bucket: Callable[[dict], tuple]
    make_call: Callable[[dict, Variant, Any], Callable[[], Any]]
    shapes: tuple = ()
    work: Optional[Callable[[Target, Variant, dict, dict], Any]] = None
    covers: Callable[[Variant, dict], bool] = lambda variant, shape: True

    def key(self, **dims) -> tuple:
        """The store key (bucket) of a launch's shape, given as its dims: key(m=m, k=k, n=n)."""
        if set(dims) != set(self.dims):
            raise TypeError(f"Tuning.key: got dims {sorted(dims)}, this kernel's are {list(self.dims)}")
        return tuple(self.bucket(dims))


def pow2_bucket(n: int) -> int:
    """The smallest power of two >= n (>= 1): the bucket of a dim that varies per call."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


@dataclasses.dataclass
class KernelSpec:
    """A @triton.jit kernel and everything needed to compile, check and tune it.

    space(target, variant) -> list of configs (dicts of tuned constexprs, plus
        optional num_warps / num_stages), already pruned by the target's limits.
        register_kernel keeps this function as ``candidates`` and narrows
        ``space`` on Ascend targets to the candidates that bishengir compiled
        (autotune/ascend_verdicts.json, see verdicts.py).
    default(target, variant) -> the derived default config for that target.
    tuning: how the tuner measures it on a device (None: dry run only).
    """

    name: str
    fn: Any
    variants: list
    space: Callable[[Target, Variant], list]
    default: Callable[[Target, Variant], dict]
    uses_dot: bool = False
    tuning: Optional[Tuning] = None
    candidates: Optional[Callable[[Target, Variant], list]] = None

    def variant(self, label: str) -> Variant:
        for v in self.variants:
            if v.label == label:
                return v
        raise KeyError(f"{self.name}: no variant {label!r}")


KERNELS: dict[str, KernelSpec] = {}


def _compiled_space(spec: KernelSpec, target: Target, variant: Variant) -> list:
    configs = spec.candidates(target, variant)
    return verdicts.compiled(spec.name, variant.label, configs, target) if target.is_ascend else configs


def register_kernel(spec: KernelSpec) -> KernelSpec:
    if spec.name in KERNELS and KERNELS[spec.name].fn is not spec.fn:
        raise ValueError(f"kernel {spec.name!r} registered twice")
    if spec.candidates is None:
        spec.candidates = spec.space
        spec.space = functools.partial(_compiled_space, spec)
    KERNELS[spec.name] = spec
    return spec


def split_config(config: dict) -> tuple[dict, dict]:
    """(constexpr kwargs, launch options) of a config."""
    meta = {k: v for k, v in config.items() if k not in LAUNCH_OPTIONS}
    opts = {k: v for k, v in config.items() if k in LAUNCH_OPTIONS}
    return meta, opts
