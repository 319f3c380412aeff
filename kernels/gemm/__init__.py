"""The int8/int4 GEMM with the dequant/requant fused into its epilogue, as a package the ops call.

  formats.py      operand formats and epilogue modes (enums, and the constexprs the kernels read)
  loaders.py      @triton.jit operand loaders: the int8 tile of x1 / x2 for each format
  epilogue.py     @triton.jit epilogues: scale decode, bias, offset, requant, the one store
  kernel.py       ``quant_matmul.gemm``: the int32-accumulator kernel (its split launches store partials)
  kernel_a8w4.py  ``quant_matmul.gemm_a8w4``: int8 x int4 with per-k-group scales (float32 accumulator)
  kernel_reduce.py ``quant_matmul.gemm_reduce``: a split launch's second half (sum the partials, the epilogue)
  split_k.py      the split-K schedule, its workspace and its modelled cost
  variants.py     the variants, described by data (GemmVariant: operands, decode, split, launched, tuned)
  spaces.py       config spaces and derived defaults per target
  specs.py        the three kernels in the registry
  plan.py         Modes (derived from dtypes once) and GemmPlan (a validated call)
  dispatch.py     ``launch``: the one launch both ops use (and its modelled schedule)
  tuning.py       shapes, buckets and the modelled work for the tuner

quant_matmul.py and compress_matmul.py validate their arguments, build a GemmPlan and call ``launch``.
"""
from .formats import AFormat, BFormat, BiasMode, OffsetMode, ScaleMode  # noqa: F401
from .dispatch import check_32bit, config_variant, launch  # noqa: F401
from .plan import GemmPlan, Modes, modes  # noqa: F401
from .specs import GEMM, GEMM_A8W4, GEMM_REDUCE  # noqa: F401
from .variants import GemmVariant  # noqa: F401
