"""What the Ascend compiler said about each candidate config: the spaces tuners pick from on A2/A3.

A kernel's ``space`` function proposes candidates from a coarse UB/L0/L1 model; bishengir-compile's
memory planning decides. ``python -m atlas_kernels.checks ascend --write-verdicts`` compiles every
candidate (Linalg, then bishengir HFusion/HIVM) and writes ``ascend_verdicts.json`` next to this file:

    {"schema": 1, "compiler": "...", "soc": "Ascend910B2", "memory": "ub196608-l1524288-l0a65536-...",
     "kernels": {"quant_matmul.gemm": {"i8-nd": {"<config json>": {"ok": true, "ub": 180224,
                                                                   "linalg": "<sha256 prefix>"}, ...}}}}

On an Ascend target whose on-chip sizes match ``memory`` (all A2/A3 SoCs share them), a kernel's space
is its candidates that compiled; a candidate without a verdict is left out. The Ascend check re-lowers
what it checks and flags a verdict whose Linalg hash no longer matches (the kernel changed: regenerate).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import re
import tempfile
import warnings

from .targets import Target

SCHEMA = 1
PATH = pathlib.Path(__file__).with_name("ascend_verdicts.json")
_LOC = re.compile(r"\s*loc\((?:[^()]|\([^()]*\))*\)|^#loc.*$", re.M)


def config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def memory_class(target: Target) -> str:
    """The on-chip sizes that bishengir's memory planning depends on."""
    return (f"ub{target.ub_bytes}-l1{target.l1_bytes}-l0a{target.l0a_bytes}-l0b{target.l0b_bytes}"
            f"-l0c{target.l0c_bytes}")


def linalg_hash(linalg: str) -> str:
    """Hash of a Linalg module without its source locations (they name the checkout's paths)."""
    return hashlib.sha256(_LOC.sub("", linalg).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def load(path: pathlib.Path = PATH) -> dict:
    """The verdict file's data, or an empty one (with a warning) if it is missing parts or unreadable."""
    empty = {"schema": SCHEMA, "memory": None, "kernels": {}}
    if not path.exists():
        return empty
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("schema") != SCHEMA or not isinstance(data.get("kernels"), dict):
            raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA}")
        return data
    except (OSError, ValueError, AttributeError) as e:
        warnings.warn(f"atlas_kernels: ignoring unreadable Ascend verdict file {path} ({e}); Ascend config spaces "
                      f"are empty until it is regenerated (python -m atlas_kernels.checks ascend --write-verdicts)")
        return empty


def verdict(kernel: str, variant: str, config: dict, target: Target) -> dict | None:
    """The stored verdict of one config for ``target``'s memory class, or None."""
    data = load()
    if data.get("memory") != memory_class(target):
        return None
    return data["kernels"].get(kernel, {}).get(variant, {}).get(config_key(config))


def compiled(kernel: str, variant: str, configs: list, target: Target) -> list:
    """The configs of ``configs`` that bishengir compiled for ``target``'s memory class."""
    return [c for c in configs if (verdict(kernel, variant, c, target) or {}).get("ok")]


def _dumps(data: dict) -> str:
    """JSON with one line per config verdict (readable diffs)."""
    head = {k: v for k, v in data.items() if k != "kernels"}
    lines = ["{", *(f"{json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()), '"kernels": {']
    for i, (kernel, variants) in enumerate(data["kernels"].items()):
        lines.append(f" {json.dumps(kernel)}: {{")
        for j, (variant, configs) in enumerate(variants.items()):
            lines.append(f"  {json.dumps(variant)}: {{")
            items = [f"   {json.dumps(c)}: {json.dumps(v, sort_keys=True)}" for c, v in configs.items()]
            lines.append(",\n".join(items))
            lines.append("  }" + ("," if j < len(variants) - 1 else ""))
        lines.append(" }" + ("," if i < len(data["kernels"]) - 1 else ""))
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def write(kernels: dict, target: Target, compiler: str, path: pathlib.Path = PATH) -> None:
    """Merge {kernel: {variant: {config key: verdict}}} into the file (whole variants replaced), atomically."""
    data = load.__wrapped__(path)  # fresh: another run may have written since this process read it
    if data.get("memory") not in (None, memory_class(target)):
        data = {"schema": SCHEMA, "kernels": {}}
    merged = {k: dict(v) for k, v in data["kernels"].items()}
    for kernel, variants in kernels.items():
        merged.setdefault(kernel, {}).update(variants)
    out = {"schema": SCHEMA, "compiler": compiler, "soc": target.name, "memory": memory_class(target),
           "kernels": {k: {v: dict(sorted(c.items())) for v, c in sorted(vs.items())}
                       for k, vs in sorted(merged.items())}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(_dumps(out))
    os.replace(tmp, path)
    load.cache_clear()
