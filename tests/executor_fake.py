"""A kernel-less spec for the executor tests (imported by the test and, via $ATLAS_EXECUTOR_PRELOAD, by every
worker): measuring it needs no Triton, so a test's time goes into what the executors do.

Its output depends on the config: BLOCK=16 computes something else (a wrong config, never a winner).
"""
import os

import torch

from atlas_kernels.autotune import KERNELS, KernelSpec, Tuning, Variant, get_target, pick_config, pow2_bucket
from atlas_kernels.autotune import register_kernel

NAME = "test.exec"
BLOCKS = (64, 16, 32, 128, 256, 512)


def _make_call(shape, variant, device):
    def call():
        block = pick_config(NAME, get_target("interpreter"), variant.label)["BLOCK"]
        return torch.tensor([0 if block == 16 else shape["M"]], device=device)
    return call


if NAME not in KERNELS:
    register_kernel(KernelSpec(NAME, object(), [Variant("v", {})],
                               space=lambda t, v: [{"BLOCK": b} for b in BLOCKS],
                               default=lambda t, v: {"BLOCK": 64},
                               tuning=Tuning(("M",), lambda s: (pow2_bucket(s["M"]),), _make_call, ({"M": 5},))))


def echo(payload, ctx):
    """A task for the executor tests: what it got, where it ran (after payload["sleep"] seconds)."""
    import time
    time.sleep(payload.get("sleep", 0))
    return {"payload": payload, "pid": os.getpid(), "device": ctx["device"], "index": ctx["index"]}
