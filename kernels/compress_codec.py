"""Byte-exact codec for the Atlas-310P lossless int8 weight-compression format.

This is the format that msModelSlim's ``weight_compression`` writes (CANN's
"weight unzip" bitstream, MODE_A: 4 engines, tight 8-byte index) and that
``aclnnMatmulCompressDequant`` / ``MatMulV2CompressDequant`` reads.  Both
LOW_SPARSE (W8A8S, engine header byte 0xA8) and HIGH_SPARSE (W16A16S, header
byte 0x88; pass the fp16 weight viewed as int8 (n, 2k)) are supported.
Spec: docs/compress_format.md (section numbers below refer to it).

The codec is three modules: compress_codec_format (constants, prefix codes, block geometry, NZ fractal layout,
dictionary order), compress_codec_encode (compress_weight, pseudo_sparsify: pipeline, dictionary scope,
pseudo-sparsity) and compress_codec_decode (decompress_weight: what it checks). This module is their public face.
"""
from .compress_codec_decode import decompress_weight
from .compress_codec_encode import compress_weight, pseudo_sparsify
from .compress_codec_format import (DICT_SIZE, ENGINES, FRAC_BYTES, FRAC_K, FRAC_N, HEADER,  # noqa: F401
                                    HEADER_BYTE0, INDEX_UNIT, MAX_ELEMENTS, MODES, TILING, UNIT, WINDOW, Block,
                                    block_count, block_geometry, dictionary_order, nd_to_nz_fractals,
                                    nz_fractals_to_nd)

__all__ = [
    "compress_weight",
    "decompress_weight",
    "block_geometry",
    "Block",
    "nd_to_nz_fractals",
    "nz_fractals_to_nd",
    "pseudo_sparsify",
    "dictionary_order",
]
