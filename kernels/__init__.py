"""atlas-kernels: Triton kernels re-implementing CANN operators for Ascend Atlas A2/A3 NPUs.

The same kernels run on NVIDIA GPUs (upstream Triton) and on the CPU through
Triton's interpreter (set TRITON_INTERPRET=1 before importing).
"""
from ._backend import TRITON_FLAVOUR, TRITON_VERSION, info  # noqa: F401  (raises a clear ImportError without Triton)
from .add_rms_norm_quant import npu_add_rms_norm_dynamic_quant, npu_add_rms_norm_quant
from .autotune import warmup
from .compress_matmul import (CompressedWeight, compress_weight, decompress_weight, matmul_compress_dequant,
                              npu_matmul_compress_dequant, prepare_compressed_weight, pseudo_sparsify)
from .dynamic_quant import (dynamic_quant, dynamic_quant_asymmetric, npu_dynamic_quant,
                            npu_dynamic_quant_asymmetric, npu_quantize, quantize)
from .int4_pack import (convert_weight_to_int4pack, nd_to_nz, npu_convert_weight_to_int4pack, nz_to_nd,
                        unpack_int4)
from .nsa_compress import npu_nsa_compress, npu_nsa_compress_grad, nsa_compress
from .quant_matmul import (decode_quant_param, npu_quant_matmul, npu_trans_quant_param, quant_matmul,
                           trans_quant_param)
from .rope_quant_kvcache import dequant_rope_quant_kvcache, npu_dequant_rope_quant_kvcache

from ._version import __version__  # noqa: E402,F401

__all__ = ["info", "warmup",
           "npu_add_rms_norm_dynamic_quant", "npu_add_rms_norm_quant",
           "convert_weight_to_int4pack", "unpack_int4", "nd_to_nz", "nz_to_nd", "npu_convert_weight_to_int4pack",
           "quant_matmul", "trans_quant_param", "decode_quant_param", "npu_quant_matmul", "npu_trans_quant_param",
           "matmul_compress_dequant", "npu_matmul_compress_dequant", "compress_weight", "decompress_weight",
           "prepare_compressed_weight", "CompressedWeight", "pseudo_sparsify",
           "dequant_rope_quant_kvcache", "npu_dequant_rope_quant_kvcache",
           "dynamic_quant", "dynamic_quant_asymmetric", "quantize", "npu_dynamic_quant",
           "npu_dynamic_quant_asymmetric", "npu_quantize",
           "nsa_compress", "npu_nsa_compress", "npu_nsa_compress_grad"]
