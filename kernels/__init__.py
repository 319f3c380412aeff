"""atlas-kernels: Triton kernels re-implementing CANN operators for Ascend Atlas A2/A3 NPUs.

The same kernels run on NVIDIA GPUs (upstream Triton) and on the CPU through
Triton's interpreter (set TRITON_INTERPRET=1 before importing).
"""
from ._backend import TRITON_FLAVOUR, TRITON_VERSION, info  # noqa: F401  (raises a clear ImportError without Triton)
from .int4_pack import (convert_weight_to_int4pack, nd_to_nz, npu_convert_weight_to_int4pack, nz_to_nd,
                        unpack_int4)

__version__ = "0.1.0"

__all__ = ["info", "convert_weight_to_int4pack", "unpack_int4", "nd_to_nz", "nz_to_nd",
           "npu_convert_weight_to_int4pack"]

from .nsa_compress import nsa_compress, npu_nsa_compress, npu_nsa_compress_grad  # noqa: E402

__all__ += ["nsa_compress", "npu_nsa_compress", "npu_nsa_compress_grad"]
