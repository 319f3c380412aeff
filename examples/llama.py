"""A small Llama decoder (RMSNorm, rotate-half RoPE, GQA attention, SwiGLU MLP, tied embeddings) in torch.

The attention keeps q/k/v as ONE fused `qkv` nn.Linear ((Nq + 2*Nkv) * D outputs) so that, once
atlas_kernels.nn.quantize has replaced it, its output goes straight into atlas_kernels.dequant_rope_quant_kvcache:

    W8A8DynamicLinear.forward_int32(x) -> (acc int32 [B, S, H], pertoken_scale fp32 [B, S])
    dequant_rope_quant_kvcache(acc, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, [Nq*D, Nkv*D, Nkv*D],
                               weight_scale=qkv.weight_scale, activation_scale=pertoken_scale)
        -> q (RoPE'd, bf16); RoPE'd k and v quantized into the int8 caches in place

Other Linear kinds (float, W4A8, W8A8SC) give a bf16 qkv, which takes the same op with float x (no dequant).
Attention then reads the int8 cache and dequantizes it in torch (cache * scale, per channel).
With kv_cache="float" the layer is the plain torch model (bf16 cache, torch RoPE): the float reference.
Every activation is bf16 (what the quantized modules take and write); norms, softmax and RoPE tables in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class KVCache:
    """Per-layer caches [B, max_len, Nkv, D]: int8 with static per-channel scales, or float (the reference).

    scale_k / scale_v: fp32 [Nkv * D] per layer, calibrated over a text: scale_v = max |V| / 127 per channel;
    scale_k = max of each RoPE pair's norm / 127, for both channels of the pair (holds at any position).
    """

    def __init__(self, n_layers, batch, max_len, n_kv, head_dim, kind="int8", scales=None, dtype=torch.bfloat16):
        if kind not in ("int8", "float"):
            raise ValueError(f"kv cache kind must be 'int8' or 'float', got {kind!r}")
        if kind == "int8" and scales is None:
            raise ValueError("an int8 KV cache needs scales: {'k': [per-layer fp32 (Nkv*D,)], 'v': [...]}")
        self.kind, self.max_len, self.pos = kind, max_len, 0
        dt = torch.int8 if kind == "int8" else dtype
        shape = (batch, max_len, n_kv, head_dim)
        self.k = [torch.zeros(shape, dtype=dt) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dt) for _ in range(n_layers)]
        self.scales = scales


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype=torch.bfloat16) -> tuple:
    """cos, sin [len(positions), D] for rotate-half RoPE (the HF Llama layout: both halves share freqs)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = positions.float()[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: dict, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor):
        super().__init__()
        self.nq, self.nkv = cfg["n_heads"], cfg["n_kv_heads"]
        self.d = cfg["hidden"] // self.nq
        self.qkv = nn.Linear(cfg["hidden"], (self.nq + 2 * self.nkv) * self.d, bias=False)
        self.o_proj = nn.Linear(self.nq * self.d, cfg["hidden"], bias=False)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([q, k, v], dim=0))
            self.o_proj.weight.copy_(o)
        self.record = None  # a dict: forward records max |K| (RoPE'd) and max |V| per channel (calibration)

    def forward(self, x, cos, sin, cache: KVCache, layer: int):
        b, s, _ = x.shape
        start = cache.pos
        splits = [self.nq * self.d, self.nkv * self.d, self.nkv * self.d]
        if cache.kind == "int8":
            q = self._int8_cache_write(x, cos, sin, cache, layer, start, splits)
            scale_k, scale_v = cache.scales["k"][layer], cache.scales["v"][layer]
            k = cache.k[layer][:, :start + s].float() * scale_k.view(self.nkv, self.d)
            v = cache.v[layer][:, :start + s].float() * scale_v.view(self.nkv, self.d)
        else:
            qkv = self.qkv(x)
            q, k, v = qkv.split(splits, dim=-1)
            q = q.reshape(b, s, self.nq, self.d)
            k = k.reshape(b, s, self.nkv, self.d)
            c, sn = cos[:, :, None, :], sin[:, :, None, :]
            q = (q.float() * c.float() + _rotate_half(q.float()) * sn.float()).to(x.dtype)
            k = (k.float() * c.float() + _rotate_half(k.float()) * sn.float()).to(x.dtype)
            v = v.reshape(b, s, self.nkv, self.d)
            if self.record is not None:
                # K: the norm of each RoPE pair (j, j + D/2), for both channels of the pair: the rotation keeps
                # that norm, so the scale holds at every position, beyond the calibration text's length
                kf = k.float()
                pair = kf.reshape(b, s, self.nkv, 2, self.d // 2).pow(2).sum(3).sqrt()
                kmax = pair.amax(dim=(0, 1)).repeat(1, 2).reshape(-1)
                vmax = v.float().abs().amax(dim=(0, 1)).reshape(-1)
                for name, amax in (("k", kmax), ("v", vmax)):
                    self.record[name] = torch.maximum(self.record.get(name, amax), amax)
            cache.k[layer][:, start:start + s] = k
            cache.v[layer][:, start:start + s] = v
            k = cache.k[layer][:, :start + s].float()
            v = cache.v[layer][:, :start + s].float()
        # GQA: each kv head serves nq / nkv query heads
        rep = self.nq // self.nkv
        qh = q.float().transpose(1, 2)                                     # [B, Nq, S, D]
        kh = k.transpose(1, 2).repeat_interleave(rep, dim=1)                # [B, Nq, T, D]
        vh = v.transpose(1, 2).repeat_interleave(rep, dim=1)
        t = start + s
        mask = torch.ones(s, t, dtype=torch.bool).tril(diagonal=start)
        att = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)    # fp32
        out = att.transpose(1, 2).reshape(b, s, self.nq * self.d).to(x.dtype)
        return self.o_proj(out)

    def _int8_cache_write(self, x, cos, sin, cache, layer, start, splits):
        """The fused op: (dequant) -> RoPE -> quant -> cache[b, start + s]; returns RoPE'd q [B, S, Nq, D]."""
        import atlas_kernels
        b, s, _ = x.shape
        extra = {}
        if hasattr(self.qkv, "forward_int32"):  # W8A8 dynamic: the int32 accumulator, dequantized in the op
            acc, pertoken = self.qkv.forward_int32(x)
            xin = acc
            extra = {"weight_scale": self.qkv.weight_scale, "activation_scale": pertoken.reshape(-1)}
        else:
            xin = self.qkv(x)
        indices = torch.full((b,), start, dtype=torch.int32)
        q, _, _, _, _ = atlas_kernels.dequant_rope_quant_kvcache(
            xin, cos[:, :, None, :], sin[:, :, None, :], cache.k[layer], cache.v[layer], indices,
            cache.scales["k"][layer], cache.scales["v"][layer], splits, **extra)
        return q


class MLP(nn.Module):
    """SwiGLU with gate and up fused in one Linear (one activation quant and one GEMM instead of two)."""

    def __init__(self, cfg, gate, up, down):
        super().__init__()
        self.ffn = cfg["ffn"]
        self.gate_up = nn.Linear(cfg["hidden"], 2 * self.ffn, bias=False)
        self.down_proj = nn.Linear(self.ffn, cfg["hidden"], bias=False)
        with torch.no_grad():
            self.gate_up.weight.copy_(torch.cat([gate, up], dim=0))
            self.down_proj.weight.copy_(down)

    def forward(self, x):
        g, u = self.gate_up(x).split(self.ffn, dim=-1)
        return self.down_proj((F.silu(g.float()) * u.float()).to(x.dtype))


class DecoderLayer(nn.Module):
    def __init__(self, cfg, w, i):
        super().__init__()
        p = f"layers.{i}."
        self.input_norm = RMSNorm(w[p + "input_norm"], cfg["rms_eps"])
        self.attn = Attention(cfg, w[p + "q"], w[p + "k"], w[p + "v"], w[p + "o_proj"])
        self.post_attention_norm = RMSNorm(w[p + "post_attention_norm"], cfg["rms_eps"])
        self.mlp = MLP(cfg, w[p + "gate"], w[p + "up"], w[p + "down_proj"])

    def forward(self, x, cos, sin, cache, layer):
        x = x + self.attn(self.input_norm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: dict, weights: dict, dtype=torch.bfloat16):
        super().__init__()
        self.cfg = cfg
        self.head_dim = cfg["hidden"] // cfg["n_heads"]
        self.embed = nn.Embedding(cfg["vocab"], cfg["hidden"])
        with torch.no_grad():
            self.embed.weight.copy_(weights["embed"])
        self.layers = nn.ModuleList(DecoderLayer(cfg, weights, i) for i in range(cfg["n_layers"]))
        self.norm = RMSNorm(weights["final_norm"], cfg["rms_eps"])
        self.lm_head = nn.Linear(cfg["hidden"], cfg["vocab"], bias=False)
        self.lm_head.weight = self.embed.weight  # tied (quantize() gives lm_head its own quantized copy)
        self.to(dtype)
        self.requires_grad_(False)

    def new_cache(self, batch, max_len, kind="int8", scales=None) -> KVCache:
        return KVCache(len(self.layers), batch, max_len, self.cfg["n_kv_heads"], self.head_dim, kind, scales,
                       self.embed.weight.dtype)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, cache: KVCache, progress=None) -> torch.Tensor:
        """ids [B, S] (the next S tokens after cache.pos) -> logits fp32 [B, S, vocab]; advances cache.pos."""
        b, s = ids.shape
        if cache.pos + s > cache.max_len:
            raise ValueError(f"the cache holds {cache.max_len} tokens; {cache.pos} + {s} do not fit")
        cos, sin = rope_tables(torch.arange(cache.pos, cache.pos + s), self.head_dim, self.cfg["rope_theta"])
        cos, sin = cos.expand(b, s, -1), sin.expand(b, s, -1)
        x = self.embed(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
            if progress:
                progress(i)
        cache.pos += s
        return self.lm_head(self.norm(x)).float()
