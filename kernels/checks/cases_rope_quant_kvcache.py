"""ascend-run's case for dequant_rope_quant_kvcache's fused kernel."""
from __future__ import annotations

from .cases import torch_dtype


def case(kernel_name: str, label: str):
    """(call, expected) for one dequant_rope_quant_kvcache variant: the variant's own dtypes and features on the
    shapes of tests/test_rope_quant_kvcache.py (b=2, s=3, nq=4, nkv=2, caches of random bytes); q/k/v bit for bit
    and the WHOLE caches byte for byte, as those tests compare."""
    import torch
    from .. import rope_quant_kvcache as op
    from ..autotune import KERNELS
    from ..reference import rope_quant_kvcache as ref
    v = KERNELS[kernel_name].variant(label)
    c, ty = v.constexprs, v.types
    g = torch.Generator().manual_seed(0)
    b, s, nq, nkv, d = 2, 3, 4, 2, 2 * c["BLOCK_D2"]
    h = (nq + 2 * nkv) * d
    if c["DEQUANT"]:
        x = torch.randint(-3000, 3000, (b, s, h), dtype=torch.int32, generator=g)
    else:
        x = (torch.randn((b, s, h), generator=g) * 2).to(torch_dtype(ty["x_ptr"]))
    angle = torch.rand((b, s, 1, d), generator=g) * 6.3
    cos, sin = angle.cos().to(torch_dtype(ty["cos_ptr"])), angle.sin().to(torch_dtype(ty["cos_ptr"]))
    if c["PAGE"]:
        c1, c2 = 3, 4
        indices = torch.randperm(c1 * c2, generator=g)[: b * s]
    else:
        c1, c2 = b + 1, s + 5
        indices = torch.randint(0, c2 - s + 1, (b,), generator=g)
    indices = indices.to(torch_dtype(ty["idx_ptr"]))
    k_cache = torch.randint(-128, 128, (c1, c2, nkv, d), dtype=torch.int8, generator=g)
    v_cache = torch.randint(-128, 128, (c1, c2, nkv, d), dtype=torch.int8, generator=g)
    kw = {"cache_mode": "page" if c["PAGE"] else "contiguous", "kv_output": bool(c["KV_OUT"])}
    if c["DEQUANT"]:
        kw["weight_scale"] = torch.rand(h, generator=g) * 2e-3 + 1e-4
        if c["HAS_ACT"]:
            kw["activation_scale"] = torch.rand(b * s, generator=g) + 0.5
        if c["BIAS"] == 1:
            kw["bias"] = torch.randint(-200, 200, (h,), dtype=torch.int32, generator=g)
        elif c["BIAS"] == 2:
            kw["bias"] = torch.randn(h, generator=g).to(torch_dtype(ty["bias_ptr"]))
    if c["HAS_OFF_K"]:
        kw["offset_k"] = torch.randn(nkv, d, generator=g) * 3
    if c["HAS_OFF_V"]:
        kw["offset_v"] = torch.randn(nkv * d, generator=g) * 3
    scale_k = torch.rand(nkv, d, generator=g) * 0.05 + 0.01
    scale_v = torch.rand(nkv * d, generator=g) * 0.05 + 0.01
    args = [x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, [nq * d, nkv * d, nkv * d]]
    theirs = list(args)
    theirs[3], theirs[4] = k_cache.clone(), v_cache.clone()
    expected = ref.dequant_rope_quant_kvcache(*theirs, **kw)

    def call():
        mine = list(args)
        mine[3], mine[4] = k_cache.clone(), v_cache.clone()
        return op.dequant_rope_quant_kvcache(*mine, **kw)
    names = ("q", "k", "v", "k_cache", "v_cache")
    return call, [(n, e, "bytes") for n, e in zip(names, expected)]
