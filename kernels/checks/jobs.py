"""What the checks check: one Job per (kernel, variant, target, config), and the table they print."""
from __future__ import annotations

import dataclasses
import random

from ..autotune.registry import KERNELS, KernelSpec, Variant, split_config
from ..autotune.targets import Target, get_target


@dataclasses.dataclass
class Job:
    spec: KernelSpec
    variant: Variant
    target: Target
    config: dict
    shipped: bool

    @property
    def label(self) -> str:
        meta, opts = split_config(self.config)
        cfg = ",".join(f"{k}={v}" for k, v in {**meta, **opts}.items())
        return f"{self.spec.name}[{self.variant.label}] {self.target.name} {cfg}"


@dataclasses.dataclass
class Result:
    job: Job
    ok: bool
    detail: str = ""
    stats: dict = dataclasses.field(default_factory=dict)


def signature(spec: KernelSpec, variant: Variant, config: dict) -> tuple[dict, dict]:
    """(signature with every argument in order, constexpr values) for ASTSource."""
    meta, _ = split_config(config)
    constexprs = {**variant.constexprs, **meta}
    sig = {}
    for name in spec.fn.arg_names:
        if name in variant.types:
            sig[name] = variant.types[name]
        elif name in constexprs:
            sig[name] = "constexpr"
        else:
            raise KeyError(f"{spec.name}[{variant.label}]: no type or constexpr value for argument {name!r}")
    return sig, {k: v for k, v in constexprs.items() if k in sig}


def shipped_configs(spec: KernelSpec, variant: Variant, target: Target) -> list:
    """The derived default and every entry of the shipped store for this kernel variant (what launches use)."""
    from ..autotune import store
    configs = [spec.default(target, variant)]
    for entry in store.read(store.store_file(store.SHIPPED_DIR, target.name), target.name):
        if entry.kernel == spec.name and entry.variant == variant.label and entry.config not in configs:
            configs.append(entry.config)
    return configs


def jobs(target_names, full: bool = False, prefix: "str | tuple" = "", sample: int = 2, extra_specs=(),
         candidates: bool = False) -> list:
    """Every (kernel, variant, target, config) to check: shipped configs plus a sample of each space.

    candidates: every candidate of each space (``KernelSpec.candidates``, before the Ascend verdicts).
    """
    out = []
    specs = [s for n, s in sorted(KERNELS.items()) if n.startswith(prefix)] + list(extra_specs)
    for tname in target_names:
        target = get_target(tname)
        for spec in specs:
            for variant in spec.variants:
                shipped = shipped_configs(spec, variant, target)
                out.extend(Job(spec, variant, target, c, True) for c in shipped)
                space = (spec.candidates or spec.space) if candidates else spec.space
                space = [c for c in space(target, variant) if c not in shipped]
                if not (full or candidates):
                    rng = random.Random(f"{spec.name}/{variant.label}/{tname}")
                    space = rng.sample(space, min(sample, len(space)))
                out.extend(Job(spec, variant, target, c, False) for c in space)
    return out


def print_table(rows: list, columns: list) -> None:
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
