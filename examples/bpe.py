"""A small GPT-2 byte-level BPE tokenizer built from a GGUF's tokenizer.ggml.tokens / merges (no dependency).

Pre-tokenization follows llama.cpp's "smollm" pre-tokenizer: every digit on its own, then the GPT-2 pattern;
Python's `re` has no \\p{L}, so letters are [^\\W\\d_] (Unicode-aware), which is the same for English text.
Control tokens (<|im_start|>, <|im_end|>, ...) written in the text are matched whole, as the chat template needs.
"""
from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> dict:
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return dict(zip(range(256), chars))


_PRE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+|\d| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")
CONTROL = 3  # tokenizer.ggml.token_type of control tokens


class BPETokenizer:
    def __init__(self, tokens: list, merges: list, token_type: list = (), bos: int = 1, eos: int = 2,
                 chat_template: str = ""):
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.bos, self.eos = bos, eos
        self.chat_template = chat_template
        specials = [t for t, kind in zip(self.tokens, token_type) if kind == CONTROL]
        self._special = re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))
                                   + ")") if specials else None
        self._b2u = _byte_to_unicode()
        self._u2b = {c: b for b, c in self._b2u.items()}

    @functools.lru_cache(maxsize=65536)
    def _bpe(self, word: str) -> tuple:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return tuple(self.ids[p] for p in parts)

    def encode(self, text: str) -> list:
        out = []
        chunks = self._special.split(text) if self._special else [text]
        for chunk in chunks:
            if not chunk:
                continue
            if chunk in self.ids and self._special and self._special.fullmatch(chunk):
                out.append(self.ids[chunk])
                continue
            for piece in _PRE.findall(chunk):
                out.extend(self._bpe("".join(self._b2u[b] for b in piece.encode("utf-8"))))
        return out

    def decode(self, ids) -> str:
        data = bytearray()
        for i in ids:
            tok = self.tokens[int(i)]
            if all(c in self._u2b for c in tok):
                data.extend(self._u2b[c] for c in tok)
            else:  # control tokens are stored as plain text
                data.extend(tok.encode("utf-8"))
        return data.decode("utf-8", errors="replace")

    def chat_prompt(self, user: str) -> str:
        """The GGUF's chat template (ChatML with SmolLM's default system line) with add_generation_prompt."""
        system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                f"<|im_start|>assistant\n")
