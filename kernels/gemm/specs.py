"""The GEMM kernels in the registry (autotune.registry): the checks, the tuner and the launch read them here.

Their names are store keys: ``quant_matmul.gemm`` is the int32-accumulator kernel (quant_matmul's int8/int4
formats and matmul_compress_dequant's sparse weight), ``quant_matmul.gemm_a8w4`` the group-scaled A8W4 kernel,
``quant_matmul.gemm_reduce`` the split-K reduction both run after a split launch.
"""
from __future__ import annotations

from ..autotune.registry import KernelSpec, register_kernel
from .kernel import _qmm_kernel
from .kernel_a8w4 import _a8w4_kernel
from .kernel_reduce import _split_reduce_kernel
from .spaces import _default, _reduce_default, _reduce_space, _space
from .variants import A8W4_VARIANTS, GEMM_VARIANTS, REDUCE_VARIANTS

GEMM = register_kernel(KernelSpec("quant_matmul.gemm", _qmm_kernel, GEMM_VARIANTS, _space, _default, uses_dot=True))
GEMM_A8W4 = register_kernel(KernelSpec("quant_matmul.gemm_a8w4", _a8w4_kernel, A8W4_VARIANTS, _space, _default,
                                       uses_dot=True))
GEMM_REDUCE = register_kernel(KernelSpec("quant_matmul.gemm_reduce", _split_reduce_kernel, REDUCE_VARIANTS,
                                         _reduce_space, _reduce_default))
