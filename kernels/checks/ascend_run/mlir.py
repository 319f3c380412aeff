"""MLIR text, just enough of a parser: brackets, top-level splits, memref types, the functions of a module and the
last IR dump in a compiler log. ``Unsupported``: a construct the CPU run cannot handle."""
from __future__ import annotations

import re

from .. import ascend


class Unsupported(RuntimeError):
    """bishengir's IR has a construct the CPU path cannot run."""


# ---------------------------------------------------------------- MLIR text: just enough of a parser
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}


def _string_end(text: str, j: int) -> int:
    """Index of the closing quote of the string literal that opens at text[j]."""
    j += 1
    while text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j


def closing(text: str, i: int) -> int:
    """Index just past the bracket that closes text[i]; skips strings and the '>' of '->'."""
    stack = []
    j = i
    while j < len(text):
        c = text[j]
        if c == '"':
            j = _string_end(text, j)
        elif c in _PAIRS:
            stack.append(_PAIRS[c])
        elif c in ")]}>" and not (c == ">" and text[j - 1] == "-"):
            if not stack or stack.pop() != c:
                raise ValueError(f"unbalanced {c!r} at {j}: {text[max(0, j - 60):j + 20]!r}")
            if not stack:
                return j + 1
        j += 1
    raise ValueError(f"no closing bracket for {text[i]!r} at {i}")


def split_top(text: str, sep: str = ",") -> list:
    """text split at top-level ``sep`` (outside any bracket or string), stripped."""
    parts, depth, start, j = [], 0, 0, 0
    while j < len(text):
        c = text[j]
        if c == '"':
            j = _string_end(text, j)
        elif c in _PAIRS:
            depth += 1
        elif c in ")]}>" and not (c == ">" and text[j - 1] == "-"):
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:j].strip())
            start = j + 1
        j += 1
    tail = text[start:].strip()
    return parts + [tail] if tail or parts else parts


def parse_memref(ty: str) -> tuple:
    """'memref<16x?xf32, strided<..>, #hivm.address_space<ub>>' -> (dims, elem, layout or None, space or None)."""
    ty = ty.strip()
    if not ty.startswith("memref<") or closing(ty, 6) != len(ty):
        raise ValueError(f"not a memref type: {ty}")
    fields = split_top(ty[7:-1])
    *dims, elem = fields[0].split("x")
    layout = space = None
    for f in fields[1:]:
        m = re.fullmatch(r"#hivm\.address_space<(\w+)>", f)
        if m:
            space = m.group(1)
        else:
            layout = f
    return [None if d == "?" else int(d) for d in dims], elem, layout, space


_ELEM_BITS = {"i1": 1, "i8": 8, "i16": 16, "i32": 32, "i64": 64, "f16": 16, "bf16": 16, "f32": 32, "f64": 64}


class Func:
    """One ``func.func`` of a module: name, arguments [(ssa name, type, attr dict text)], attributes, body."""

    def __init__(self, text: str, start: int):
        self.start = start
        m = re.compile(r"func\.func (?:private )?@([\w$.]+)\(").match(text, start)
        if not m:
            raise ValueError(f"no func.func at {start}")
        self.name = m.group(1)
        open_paren = m.end() - 1
        close_paren = closing(text, open_paren)
        self.args = []
        for a in split_top(text[open_paren + 1:close_paren - 1]):
            m2 = re.match(r"(%[\w$.-]+)\s*:\s*", a)
            if not m2:
                raise ValueError(f"{self.name}: cannot parse argument {a!r}")
            rest = a[m2.end():]
            attrs = ""
            if rest.endswith("}"):
                k = rest.rindex(" {") if " {" in rest else -1
                if k < 0 or closing(rest, k + 1) != len(rest):
                    raise ValueError(f"{self.name}: cannot parse argument {a!r}")
                rest, attrs = rest[:k].strip(), rest[k + 1:]
            self.args.append((m2.group(1), rest, attrs))
        j = close_paren
        self.attrs = ""
        arrow = re.compile(r"\s*->\s*").match(text, j)
        if arrow:  # results: one type, or a parenthesised list
            k = arrow.end()
            j = closing(text, k) if text[k] == "(" else re.compile(r"[^\s{]+").match(text, k).end()
        if text.startswith(" attributes {", j):
            attr_open = j + len(" attributes ")
            j = closing(text, attr_open)
            self.attrs = text[attr_open:j]
        body_open = text.index("{", j)
        if text[j:body_open].strip():
            raise ValueError(f"{self.name}: unexpected text in the function header: {text[j:body_open]!r}")
        self.results = text[close_paren:j].split(" attributes {")[0].strip()
        self.end = closing(text, body_open)
        self.body = text[body_open + 1:self.end - 1]

    @property
    def is_entry(self) -> bool:
        return re.search(r"(^|[{,\s])hacc\.entry([,}\s]|$)", self.attrs) is not None

    @property
    def is_host(self) -> bool:
        return "#hacc.function_kind<HOST>" in self.attrs


def functions(module: str) -> list:
    return [Func(module, m.start(1)) for m in re.finditer(r"(?m)^\s*(func\.func )", module)]


def last_dump(log: str, before: str = "convert-hivm-to-std") -> str:
    """The module text of the last ``--mlir-print-ir-before`` dump for pass ``before`` in a bishengir log."""
    marker = re.compile(r"// -----// IR Dump Before \S+ \((" + re.escape(before) + r")\)[^\n]*//----- //\n")
    found = list(marker.finditer(log))
    if not found:
        raise Unsupported(f"bishengir never reached {before}: " + ascend._first_error(RuntimeError(log[-2000:])))
    start = found[-1].end()
    m = re.compile(r"module\b").search(log, start)
    brace = log.index("{", m.end())
    # the module's attribute dict comes first when present: skip to the body's brace
    if log[m.end():brace].strip() == "attributes":
        brace = log.index("{", closing(log, brace))
    return log[m.start():closing(log, brace)] + "\n"
