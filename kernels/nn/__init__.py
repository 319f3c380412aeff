"""atlas_kernels.nn: quantized Linear modules built on the atlas_kernels ops, ``quantize`` for a float model,
and ``load_msmodelslim`` for msModelSlim's exported checkpoints (docs/models.md)."""
from .linear import W4A8DynamicLinear, W8A8DynamicLinear, W8A8Linear, W8A8SCLinear, quantize_weight
from .msmodelslim import load_msmodelslim
from .quantize import SCHEMES, calibrate, quantize

__all__ = ["W8A8DynamicLinear", "W8A8Linear", "W4A8DynamicLinear", "W8A8SCLinear", "quantize_weight",
           "quantize", "calibrate", "SCHEMES", "load_msmodelslim"]
