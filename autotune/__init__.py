"""Targets, config spaces and config selection (``atlas_kernels.autotune``)."""
from .registry import KERNELS, KernelSpec, Variant, override_config, pick_config, register_kernel, split_config
from .targets import (ASCEND_TARGETS, CUDA_TARGETS, TARGETS, Target, UnsupportedTargetError, detect_target,
                      get_target)

__all__ = ["KERNELS", "KernelSpec", "Variant", "override_config", "pick_config", "register_kernel", "split_config",
           "ASCEND_TARGETS", "CUDA_TARGETS", "TARGETS", "Target", "UnsupportedTargetError", "detect_target",
           "get_target"]
