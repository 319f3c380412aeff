"""Targets, config spaces, config selection, tuned-config stores and tuning (``atlas_kernels.autotune``)."""
from .registry import KERNELS, KernelSpec, Tuning, Variant, pow2_bucket, register_kernel, split_config
from .select import override_config, pick_config
from .targets import (ASCEND_TARGETS, CUDA_TARGETS, TARGETS, Target, UnsupportedTargetError, detect_target,
                      get_target)
from .tune import warmup

__all__ = ["KERNELS", "KernelSpec", "Tuning", "Variant", "override_config", "pick_config", "pow2_bucket",
           "register_kernel", "split_config", "warmup", "ASCEND_TARGETS", "CUDA_TARGETS", "TARGETS", "Target",
           "UnsupportedTargetError", "detect_target", "get_target"]
