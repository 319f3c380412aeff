"""quantize(model, scheme): replace a float model's nn.Linear layers by the quantized modules, in place."""
from __future__ import annotations

import fnmatch
from typing import Optional

import torch
from torch import nn

from .linear import W4A8DynamicLinear, W8A8DynamicLinear, W8A8SCLinear, check_w4a8_shape

SCHEMES = ("w8a8_dynamic", "w4a8_dynamic", "w8a8_sc")


def _targets(model: nn.Module, skip) -> list:
    """(qualified name, nn.Linear) of every Linear not matched by a ``skip`` pattern (fnmatch on the name)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(fnmatch.fnmatchcase(name, p) for p in skip)]


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where ``name`` is; returns the model (``new`` itself when name is '' (the model is the Linear))."""
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def quantize(model: nn.Module, scheme: str, *, group_size: Optional[int] = None, skip=(),
             act_max: Optional[dict] = None) -> nn.Module:
    """Replace every nn.Linear of ``model`` (recursively, in place) by its quantized module; returns the model.

    scheme: "w8a8_dynamic" (W8A8DynamicLinear), "w4a8_dynamic" (W4A8DynamicLinear, per group of ``group_size``
    input channels, per output channel when None), or "w8a8_sc" (W8A8SCLinear: static activations, so it needs
    ``act_max`` {layer name: max |x|}, e.g. from ``calibrate``). Weights: symmetric per output channel.
    skip: fnmatch patterns matched against the qualified module name ("lm_head", "*.mlp.*"): those stay float.
    Every layer is checked before any is replaced: a layer the kernels cannot take (W4A8: out_features % 8,
    in_features % group_size, group_size % 64) raises ValueError naming it; add it to ``skip`` to keep it float.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"quantize: scheme must be one of {', '.join(map(repr, SCHEMES))}, got {scheme!r}")
    if group_size is not None and scheme != "w4a8_dynamic":
        raise ValueError(f"quantize: group_size is for scheme 'w4a8_dynamic' only, got group_size={group_size} "
                         f"with {scheme!r}")
    if isinstance(skip, str):
        skip = (skip,)
    targets = _targets(model, skip)
    for name, lin in targets:
        if scheme == "w4a8_dynamic":
            try:
                check_w4a8_shape(f"layer {name or '<model>'!r}", lin.in_features, lin.out_features, group_size)
            except ValueError as e:
                raise ValueError(f"quantize: {e}; pass skip=[{name!r}] to keep it float") from None
        if scheme == "w8a8_sc" and (act_max is None or name not in act_max):
            raise ValueError(f"quantize: scheme 'w8a8_sc' quantizes activations statically and needs act_max[{name!r}]"
                             f" (the calibrated max |x| of the layer's input): act_max = calibrate(model, inputs)")
    for name, lin in targets:
        if scheme == "w8a8_dynamic":
            new = W8A8DynamicLinear.from_float(lin)
        elif scheme == "w4a8_dynamic":
            new = W4A8DynamicLinear.from_float(lin, group_size)
        else:
            new = W8A8SCLinear.from_float(lin, act_max=act_max[name])
        model = _replace(model, name, new)
    return model


@torch.no_grad()
def calibrate(model: nn.Module, *args, skip=(), **kwargs) -> dict:
    """Run ``model(*args, **kwargs)`` once and return {name: max |x|} of the input of every nn.Linear (those not
    matched by ``skip``): the activation range the static schemes take (input_scale = max / 127). Call it more
    than once and merge with max() for several batches."""
    found: dict = {}
    hooks = []
    for name, lin in _targets(model, (skip,) if isinstance(skip, str) else skip):
        def hook(_module, inputs, _name=name):
            amax = float(inputs[0].detach().abs().amax())
            found[_name] = max(found.get(_name, 0.0), amax)
        hooks.append(lin.register_forward_pre_hook(hook))
    try:
        model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return found
