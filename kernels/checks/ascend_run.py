"""Run what bishengir produced for a kernel on this x86 CPU (``python -m atlas_kernels.checks ascend-run``).

For a vector kernel, the module is taken just before ``convert-hivm-to-std``, after the whole HIVM pipeline:
PlanMemory has placed every on-chip buffer (``hivm.hir.pointer_cast`` at a byte offset, reuse included),
multi-buffering and the sync flags are in. Then:

1. the entry function is rewritten: ``get_block_idx`` / ``get_sub_block_idx`` / ``..._num`` become i64
   arguments; each ``pointer_cast(%offset)`` into address space S becomes a ``memref.view`` of one byte pool
   per S at that offset (so buffers PlanMemory overlaps overlap here too). i1 buffers, which the hardware
   packs 8 to a byte and the CPU stores one per byte, get their own pool at 8x the offset;
2. ``bishengir-opt --execution-engine-convert-hivm-to-upstream`` and the upstream lowering passes turn it
   into the LLVM dialect, triton-ascend's bundled LLVM into an x86 object, gcc into a shared library;
3. each block (and each vector sub-block) is one ctypes call, with its own pools filled with a poison
   byte. Every launch runs twice: blocks in order with pools poisoned 0x00, then in reverse order with 0xFF.
   Outputs that differ read an uninitialised UB byte, or depend on the order of the blocks (a third run
   tells which). GM tensors are copied into buffers with guard bytes on both sides: a store
   outside a tensor's span fails the launch.

Kernels with ``tl.dot`` (the cube unit) cannot run at that level: ``nd2nz``, ``mmadL1``, ``fixpipe`` and the
cross-core sync have no CPU lowering. They run at the HFusion level instead: the module just before
``convert-hfusion-to-hivm``, where the matmul is still ``linalg.matmul`` and program ids are arguments. It is
bufferized (one-shot) and every HFusion op is expanded by us, as at the HIVM level: casts saturate float -> int
with NaN -> 0, atomics are plain read-modify-writes (blocks run one after another). (bishengir's own
``--linalg-generalize-named-ops`` is not used: its ``vnot`` is the identity in 1.2.0.) Local buffers start
filled with the poison byte, so the two runs still catch a read of memory never written. What this level
does not contain: UB/L1/L0 planning, the cube/vector split and its synchronisation, the HIVM lowering of
every op.

A construct these paths cannot run (cube ops at the HIVM level, multi-address buffers, a layout on a planned
buffer, an HFusion op without a CPU form) raises ``Unsupported`` naming it.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from . import ascend

RUNNER_VERSION = "2"
CONVERT = ("--execution-engine-convert-hivm-to-upstream", "--execution-engine-convert-hfusion-to-upstream")
LOWERING = ("--annotation-lowering", "--expand-strided-metadata",
            "--convert-linalg-to-loops", "--canonicalize", "--convert-scf-to-cf", "--lower-affine", "--arith-expand",
            "--convert-vector-to-llvm", "--convert-math-to-llvm", "--finalize-memref-to-llvm=use-generic-functions",
            "--convert-func-to-llvm", "--convert-cf-to-llvm", "--convert-index-to-llvm", "--convert-arith-to-llvm",
            "--reconcile-unrealized-casts")
# the module is taken just before this pass: after the HIVM pipeline (vector kernels), or after HFusion (cube kernels)
HIVM_LEVEL, HFUSION_LEVEL = "convert-hivm-to-std", "convert-hfusion-to-hivm"
DUMP = ("--mlir-print-ir-module-scope", "--mlir-print-local-scope", "--mlir-disable-threading")
BUFFERIZE = ("--empty-tensor-to-alloc-tensor",
             "--one-shot-bufferize=bufferize-function-boundaries=1 allow-return-allocs-from-loops=1",
             "--convert-bufferization-to-memref")
# hivm ops of the cube unit and of cross-core sync: no CPU lowering in ascendnpu-ir 1.2.0
CUBE_OPS = ("hivm.hir.mmadL1", "hivm.hir.mmad", "hivm.hir.nd2nz", "hivm.hir.fixpipe", "hivm.hir.sync_block",
            "hivm.hir.matmul", "hivm.hir.batchMmadL1")
INDEX_OPS = {"hivm.hir.get_block_idx": "blk", "hivm.hir.get_block_num": "blk_num",
             "hivm.hir.get_sub_block_idx": "sub", "hivm.hir.get_sub_block_num": "sub_num"}
EXTRA_SCALARS = ("blk", "blk_num", "sub", "sub_num")
SUB_BLOCKS = 2  # vector cores per AI core on A2/A3 (what bishengir's sub-block binding splits a block over)
POISON = (0x00, 0xFF)
GUARD = 4096
RT_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ascend_run_rt.c")


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


# ---------------------------------------------------------------- the rewrite
_LINE_RESULT = re.compile(r"^(\s*)(%[\w$.-]+) = ([\w.]+)")


class Abi:
    """How to call the lowered entry: its name, argument kinds in order, pools and their byte sizes."""

    def __init__(self, name, args, pools, uses_sub_block, program_ids=False):
        self.name = name
        self.args = args          # [(kind, type)]: kind in ffts, lock, workspace, tensor, scalar
        self.pools = pools        # [(pool name, bytes)] appended after the original args, then EXTRA_SCALARS
        self.uses_sub_block = uses_sub_block
        self.program_ids = program_ids  # HFusion level: the last three i32 scalars are the program id, no pools


def _constants(body: str) -> dict:
    return {n: int(v) for n, v in re.findall(r"(%[\w$.-]+) = arith\.constant (-?\d+) : i64\b", body)}


def rewrite(module: str, pool_limits: dict) -> tuple:
    """(module for bishengir-opt, Abi): the entry function rewritten as the module docstring says.

    pool_limits: {address space: bytes the target has}; a planned buffer past it is an error.
    """
    for op in CUBE_OPS:
        if re.search(re.escape(op) + r"\b", module):
            raise Unsupported(f"{op} (cube unit / cross-core sync) has no CPU lowering in this ascendnpu-ir")
    funcs = functions(module)
    entries = [f for f in funcs if f.is_entry]
    if len(entries) != 1:
        raise Unsupported(f"expected one hacc.entry function, found {[f.name for f in entries]}")
    entry = entries[0]
    taken = set(re.findall(r"%[\w$.-]+", module))
    if any(n.startswith("%atlas_") for n in taken):
        raise Unsupported("the module already uses %atlas_ names")
    consts = _constants(entry.body)
    pools: dict = {}   # pool -> bytes needed
    lines = []
    used_index = set()
    for line in entry.body.split("\n"):
        m = _LINE_RESULT.match(line)
        op = m.group(3) if m else None
        if op in INDEX_OPS:
            indent, res = m.group(1), m.group(2)
            if line[m.end():].strip() != "-> i64":
                raise Unsupported(f"unexpected form of {op}: {line.strip()}")
            used_index.add(INDEX_OPS[op])
            lines.append(f"{indent}{res} = arith.addi %atlas_{INDEX_OPS[op]}, %atlas_zero : i64")
        elif op == "hivm.hir.pointer_cast":
            lines.extend(_view(m, line, consts, pools, pool_limits))
        elif _bare_op(line) in EXPANSIONS:
            lines.extend(EXPANSIONS[_bare_op(line)](line[:len(line) - len(line.lstrip())], line, len(lines)))
        else:
            if "hivm.hir.pointer_cast" in line or any(o in line for o in INDEX_OPS):
                raise Unsupported(f"unexpected form: {line.strip()}")
            lines.append(line)
    args = _entry_args(entry, "gm")
    pool_list = sorted(pools.items())
    new_args = [f"{n}: {t}" for n, t, _ in entry.args]
    new_args += [f"%atlas_pool_{p}: memref<?xi8, #hivm.address_space<{_space(p)}>>" for p, _ in pool_list]
    new_args += [f"%atlas_{s}: i64" for s in EXTRA_SCALARS]
    header = f"func.func @{entry.name}({', '.join(new_args)}) {entry.results + ' ' if entry.results else ''}{{"
    body = "\n    %atlas_zero = arith.constant 0 : i64" + \
        "\n".join(lines)
    out = [header + body + "}\n"]
    # keep private helpers the entry may call; drop host functions and other entries
    for f in funcs:
        if f is not entry and not f.is_host:
            out.append(module[f.start:f.end] + "\n")
    text = "module {\n  " + "\n  ".join(out) + "}\n"
    return text, Abi(entry.name, args, pool_list, "sub" in used_index)


def _entry_args(entry: Func, gm_space) -> list:
    """[(kind, type)] of the entry's arguments: kind in ffts, lock, workspace, tensor, scalar; memrefs must be 1-D
    and in ``gm_space`` (None: no address space, as before HIVM)."""
    args = []
    for name, ty, attrs in entry.args:
        kind = re.search(r"#hacc\.arg_type<(\w+)>", attrs)
        kind = kind.group(1) if kind else ("tensor" if ty.startswith("memref<") else "scalar")
        if kind == "ffts_base_address":
            kind = "ffts"
        elif kind == "sync_block_lock":
            kind = "lock"
        elif kind not in ("workspace", "tensor", "scalar"):
            raise Unsupported(f"argument {name} of kind {kind} ({ty})")
        if ty.startswith("memref<"):
            dims, elem, layout, space = parse_memref(ty)
            if len(dims) != 1 or layout or space != gm_space:
                raise Unsupported(f"argument {name}: {ty} (expected a 1-D GM memref)")
        elif ty not in ("i32", "i64", "f32", "f16", "bf16"):
            raise Unsupported(f"argument {name}: scalar type {ty}")
        args.append((kind, ty))
    return args


def _bare_op(line: str):
    """Name of the op on a line that defines no result, else None."""
    m = re.match(r"\s*([a-z_]+\.[\w.]+)", line)
    return m.group(1) if m else None


def _space(pool: str) -> str:
    return pool[:-3] if pool.endswith("_i1") else pool


def _view(m, line: str, consts: dict, pools: dict, limits: dict) -> list:
    indent, res = m.group(1), m.group(2)
    rest = line[m.end():]
    if not rest.startswith("("):
        raise Unsupported(f"unexpected pointer_cast form: {line.strip()}")
    k = closing(rest, 0)
    operands = split_top(rest[1:k - 1])
    rest = rest[k:].strip()
    sizes = []
    if rest.startswith("["):
        k = closing(rest, 0)
        sizes = split_top(rest[1:k - 1])
        rest = rest[k:].strip()
    if not rest.startswith(":"):
        raise Unsupported(f"unexpected pointer_cast form: {line.strip()}")
    ty = rest[1:].strip()
    dims, elem, layout, space = parse_memref(ty)
    if len(operands) != 1:
        raise Unsupported(f"pointer_cast with {len(operands)} addresses (a multi-buffer not resolved by the "
                          f"pipeline): {line.strip()}")
    if layout is not None:
        raise Unsupported(f"pointer_cast to a memref with layout {layout}: {line.strip()}")
    if space not in limits:
        raise Unsupported(f"pointer_cast into address space {space}: {line.strip()}")
    if operands[0] not in consts:
        raise Unsupported(f"pointer_cast offset {operands[0]} is not an i64 constant: {line.strip()}")
    if None in dims:
        raise Unsupported(f"pointer_cast to a dynamic shape: {line.strip()}")
    offset = consts[operands[0]]
    elems = 1
    for d in dims:
        elems *= d
    if elem not in _ELEM_BITS:
        raise Unsupported(f"pointer_cast element type {elem}: {line.strip()}")
    hw_bytes = -(-elems * _ELEM_BITS[elem] // 8)
    if offset < 0 or offset + hw_bytes > limits[space]:
        raise Unsupported(f"planned buffer [{offset}, {offset + hw_bytes}) outside the {limits[space]}-byte "
                          f"{space}: {line.strip()}")
    pool, scale = (space + "_i1", 8) if elem == "i1" else (space, 1)
    cpu_bytes = elems * max(1, _ELEM_BITS[elem] // 8)
    pools[pool] = max(pools.get(pool, 0), offset * scale + cpu_bytes)
    tmp = "%atlas_off_" + res[1:]
    return [f"{indent}{tmp} = arith.constant {offset * scale} : index",
            f"{indent}{res} = memref.view %atlas_pool_{pool}[{tmp}][{', '.join(sizes)}] : "
            f"memref<?xi8, #hivm.address_space<{space}>> to {ty}"]


# ---------------------------------------------------------------- hivm ops the upstream conversion lacks
def _vdeinterleave(indent: str, line: str, uid: int) -> list:
    """``vdeinterleave ins(%src) outs(%dst) channel_num = C index_mode = <CHANNEL_k>``: dst[i] = src[i*C + k],
    as a strided subview of the source and a memref.copy."""
    m = re.fullmatch(r"\s*hivm\.hir\.vdeinterleave ins\((%[\w$.-]+) : (memref<.*>)\) outs\((%[\w$.-]+) : "
                     r"(memref<.*>)\) channel_num = (\d+) index_mode = <CHANNEL_(\d+)>", line)
    if not m:
        raise Unsupported(f"unexpected vdeinterleave form: {line.strip()}")
    src, src_ty, dst, dst_ty, channels, k = m.groups()
    sdims, selem, slayout, sspace = parse_memref(src_ty)
    ddims, delem, dlayout, dspace = parse_memref(dst_ty)
    channels, k = int(channels), int(k)
    stride, offset = 1, 0
    if slayout:  # a 1-D strided source: strided<[s]> or strided<[s], offset: o>
        lm = re.fullmatch(r"strided<\[(\d+)\](?:, offset: (\d+))?>", slayout)
        if not lm:
            raise Unsupported(f"vdeinterleave source layout {slayout}: {line.strip()}")
        stride, offset = int(lm.group(1)), int(lm.group(2) or 0)
    if len(sdims) != 1 or len(ddims) != 1 or None in sdims + ddims or selem != delem \
            or sdims[0] != ddims[0] * channels or k >= channels:
        raise Unsupported(f"vdeinterleave on shapes the CPU path does not handle: {line.strip()}")
    view_ty = (f"memref<{ddims[0]}x{delem}, strided<[{channels * stride}], offset: {offset + k * stride}>, "
               f"#hivm.address_space<{sspace}>>")
    name = f"%atlas_deint_{uid}"
    return [f"{indent}{name} = memref.subview {src}[{k}] [{ddims[0]}] [{channels}] : {src_ty} to {view_ty}",
            f"{indent}memref.copy {name}, {dst} : {view_ty} to {dst_ty}"]


EXPANSIONS = {"hivm.hir.vdeinterleave": _vdeinterleave}


def parse_hivm_op(line: str) -> dict:
    """Fields of a destination-style hivm op printed on one line: name, kind (<sum>), ins/outs as
    [(ssa, type)], temp_buffer, and the trailing attributes as {name: text}."""
    m = re.match(r"\s*hivm\.hir\.(\w+)(?: <(\w+)>)? ins\(", line)
    if not m:
        raise Unsupported(f"cannot parse: {line.strip()}")
    op = {"name": m.group(1), "kind": m.group(2), "attrs": {}}
    j = m.end() - 1
    for group in ("ins", "outs"):
        if group == "outs":
            k = re.compile(r"\s*outs\(").match(line, j)
            if not k:
                raise Unsupported(f"cannot parse outs of: {line.strip()}")
            j = k.end() - 1
        end = closing(line, j)
        inner = line[j + 1:end - 1]
        values, types = split_top(inner, ":")[0], ":".join(split_top(inner, ":")[1:])
        values, types = split_top(values), split_top(types)
        if len(values) != len(types):
            raise Unsupported(f"cannot parse {group} of: {line.strip()}")
        op[group] = list(zip(values, types))
        j = end
    rest = line[j:].strip()
    while rest:
        k = re.match(r"temp_buffer\(", rest)
        if k:
            end = closing(rest, k.end() - 1)
            op["temp_buffer"] = rest[k.end():end - 1]
            rest = rest[end:].strip()
            continue
        k = re.match(r"(\w+)\s*(=|:)\s*", rest)
        if not k:
            raise Unsupported(f"cannot parse the attributes of: {line.strip()}")
        start = k.end()
        if rest[start] in "[<":
            end = closing(rest, start)
        elif rest.startswith("#", start):
            end = closing(rest, rest.index("<", start))
        else:
            end = re.compile(r"[^\s]+").match(rest, start).end()
        op["attrs"][k.group(1)] = rest[start:end]
        rest = rest[end:].strip()
    return op


def _attr_word(text):
    """'<ne>' / '#hivm.compare_mode<ne>' / 'true' -> 'ne' / 'true'."""
    if text is None:
        return None
    m = re.fullmatch(r"(?:#[\w.]+)?<(\w+)>", text)
    return m.group(1) if m else text


_INT_RANGE = {"i8": (-128, 127), "i16": (-32768, 32767), "i32": (-2**31, 2**31 - 1), "i64": (-2**63, 2**63 - 1)}
_FLOAT_ROUND = {"rint": "math.roundeven", "round": "math.round", "floor": "math.floor", "ceil": "math.ceil",
                "trunc": "math.trunc"}
_CMP = {"eq": ("oeq", "eq"), "ne": ("une", "ne"), "lt": ("olt", "slt"), "le": ("ole", "sle"),
        "gt": ("ogt", "sgt"), "ge": ("oge", "sge")}


def _is_float(t):
    return t in ("f16", "bf16", "f32", "f64")


def _cast_body(src: str, dst: str, mode: str, cast: str, line: str) -> list:
    """Scalar ops (on %a, result %r) of vcast src -> dst: rounding mode applied, float -> int saturating, NaN -> 0."""
    mode = mode or "rint"
    if cast == "cast_unsigned" and src.startswith("i") and dst.startswith("i") and mode == "rint" \
            and _ELEM_BITS[dst] > _ELEM_BITS[src]:
        return [f"%r = arith.extui %a : {src} to {dst}"]
    if cast == "cast_unsigned" and src.startswith("i") and _is_float(dst) and mode == "rint":
        return [f"%r = arith.uitofp %a : {src} to {dst}"]
    if cast not in (None, "cast_signed") and not (cast == "cast_unsigned" and src == "i1"):
        raise Unsupported(f"vcast with cast = {cast}: {line.strip()}")
    if src == dst:
        raise Unsupported(f"vcast to the same type: {line.strip()}")
    if src == "i1":
        if _is_float(dst):
            return [f"%r = arith.uitofp %a : i1 to {dst}"]
        return [f"%r = arith.extui %a : i1 to {dst}"]
    if not _is_float(src) and not _is_float(dst):
        if _ELEM_BITS[dst] > _ELEM_BITS[src] and mode == "rint":
            return [f"%r = arith.extsi %a : {src} to {dst}"]
        if _ELEM_BITS[dst] < _ELEM_BITS[src] and mode == "truncwithoverflow":  # wraps: keeps the low bits
            return [f"%r = arith.trunci %a : {src} to {dst}"]
        raise Unsupported(f"integer vcast {src} -> {dst} with round_mode {mode} (saturation unknown): {line.strip()}")
    if not _is_float(src):
        if mode != "rint":
            raise Unsupported(f"int -> float vcast with round_mode {mode}: {line.strip()}")
        return [f"%r = arith.sitofp %a : {src} to {dst}"]
    if _is_float(dst):
        if _ELEM_BITS[dst] > _ELEM_BITS[src]:
            return [f"%r = arith.extf %a : {src} to {dst}"]
        if mode != "rint":
            raise Unsupported(f"float narrowing vcast with round_mode {mode}: {line.strip()}")
        return [f"%r = arith.truncf %a : {src} to {dst}"]
    if mode not in _FLOAT_ROUND or dst not in _INT_RANGE:
        raise Unsupported(f"vcast {src} -> {dst} with round_mode {mode}: {line.strip()}")
    lo, hi = _INT_RANGE[dst]
    wide = "f32" if src in ("f16", "bf16") else src
    body = [f"%w = arith.extf %a : {src} to {wide}"] if wide != src else []
    w = "%w" if wide != src else "%a"
    return body + [
        f"%rd = {_FLOAT_ROUND[mode]} {w} : {wide}",
        f"%lo = arith.constant {float(lo):e} : {wide}", f"%hi = arith.constant {float(hi):e} : {wide}",
        f"%c1 = arith.maximumf %rd, %lo : {wide}", f"%c2 = arith.minimumf %c1, %hi : {wide}",
        f"%nan = arith.cmpf uno, {w}, {w} : {wide}", f"%z = arith.constant 0.0 : {wide}",
        f"%c3 = arith.select %nan, %z, %c2 : {wide}", f"%r = arith.fptosi %c3 : {wide} to {dst}"]


_BINARY = {"vadd": ("addf", "addi"), "vsub": ("subf", "subi"), "vmul": ("mulf", "muli"),
           "vmax": ("maximumf", "maxsi"), "vmin": ("minimumf", "minsi")}


def _elementwise(indent: str, line: str, uid: int) -> list:
    """A hivm elementwise op the upstream conversion lacks, as a linalg.generic over the same memrefs.

    The scalar semantics are ours, from the HIVM op docs: vshl/vshr are shli/shrsi (``round`` is not
    modelled), vcmp is cmpf/cmpi by compare_mode (default eq), vcast rounds by round_mode (default rint)
    and saturates float -> int, NaN -> 0.
    """
    op = parse_hivm_op(line)
    name = op["name"]
    broadcast = op["attrs"].get("broadcast", "[]") not in ("[]", "array<i64>")
    if name in _BINARY and not broadcast:
        return [line]  # the upstream conversion handles these
    if op["attrs"].get("transpose", "[]") not in ("[]", "array<i64>") or (broadcast and name not in _BINARY):
        raise Unsupported(f"{name} with {op['attrs']}: {line.strip()}")
    (dst, dst_ty), = op["outs"]
    delem = parse_memref(dst_ty)[1]
    a_ty = _elem(op["ins"][0][1])
    if name in _BINARY:
        body = [f"%r = arith.{_BINARY[name][0 if _is_float(a_ty) else 1]} %a, %b : {a_ty}"]
    elif name == "vnot":
        body = ["%ones = arith.constant true" if a_ty == "i1" else f"%ones = arith.constant -1 : {a_ty}",
                f"%r = arith.xori %a, %ones : {a_ty}"]
    elif name == "vshl":
        body = [f"%r = arith.shli %a, %b : {a_ty}"]
    elif name == "vshr":
        body = [f"%r = arith.shrsi %a, %b : {a_ty}"]
    elif name == "vcmp":
        mode = _attr_word(op["attrs"].get("compare_mode")) or "eq"
        if mode not in _CMP:
            raise Unsupported(f"vcmp compare_mode {mode}: {line.strip()}")
        pred = _CMP[mode][0 if _is_float(a_ty) else 1]
        body = [f"%r = arith.{'cmpf' if _is_float(a_ty) else 'cmpi'} {pred}, %a, %b : {a_ty}"]
        if delem != "i1":
            raise Unsupported(f"vcmp into {delem}: {line.strip()}")
    elif name == "vcast":
        body = _cast_body(a_ty, delem, _attr_word(op["attrs"].get("round_mode")), _attr_word(op["attrs"].get("cast")),
                          line)
    else:
        raise Unsupported(f"hivm.hir.{name} has no CPU lowering here: {line.strip()}")
    return _generic(indent, uid, op["ins"], dst, dst_ty, body, broadcast, line)


def _elem(ty: str) -> str:
    """Element type of a memref type, or the type itself for a scalar."""
    return parse_memref(ty)[1] if ty.startswith("memref<") else ty


def _generic(indent: str, uid: int, ins: list, dst: str, dst_ty: str, body: list, broadcast: bool, line: str) -> list:
    """linalg.generic computing dst elementwise from ``ins`` [(ssa, type)] (memrefs of dst's shape, or scalars) with
    ``body``: scalar ops on %a, %b, %c (the inputs) giving %r. broadcast: an operand dim of size 1 against a larger
    result dim is read at index 0."""
    ddims, delem, _, _ = parse_memref(dst_ty)
    rank = len(ddims)
    dims = ", ".join(f"d{i}" for i in range(rank))
    maps, elems = [], []
    for v, t in ins:
        if t.startswith("memref<"):
            sdims = parse_memref(t)[0]
            if len(sdims) != rank or any(s != o and not (broadcast and s == 1) for s, o in zip(sdims, ddims)):
                raise Unsupported(f"operand shape {sdims} != result shape {ddims}: {line.strip()}")
            index = ", ".join("0" if s != o else f"d{i}" for i, (s, o) in enumerate(zip(sdims, ddims)))
            maps.append(f"affine_map<({dims}) -> ({index})>")
        else:
            maps.append(f"affine_map<({dims}) -> ()>")
        elems.append(_elem(t))
    args = ", ".join(f"%{n}: {t}" for n, t in zip("abc", elems)) + f", %out: {delem}"
    iters = ", ".join(['"parallel"'] * rank)
    region = [f"^bb0({args}):", *("  " + b for b in body), f"  linalg.yield %r : {delem}"]
    # a region is not isolated: its value names share the function's namespace
    region = [re.sub(r"%(\w+)", lambda m: f"%atlas_g{uid}_{m.group(1)}", ln) for ln in region]
    return [f"{indent}linalg.generic {{indexing_maps = [{', '.join(maps + [f'affine_map<({dims}) -> ({dims})>'])}], "
            f"iterator_types = [{iters}]}} ins({', '.join(v for v, _ in ins)} : {', '.join(t for _, t in ins)}) "
            f"outs({dst} : {dst_ty}) {{",
            *(indent + ln for ln in region), f"{indent}}}"]


def _vreduce(indent: str, line: str, uid: int) -> list:
    """``vreduce <kind>``: dst = the reduction of src over reduce_dims (dst's reduced dims have size 1), as a
    linalg.fill of the identity and a reducing linalg.generic. (The upstream conversion accumulates onto
    dst's previous contents, which the pipeline never initialises.)"""
    op = parse_hivm_op(line)
    (src, src_ty), = op["ins"]
    (dst, dst_ty), = op["outs"]
    sdims, elem, _, _ = parse_memref(src_ty)
    ddims, delem, _, _ = parse_memref(dst_ty)
    red = [int(x) for x in split_top(op["attrs"].get("reduce_dims", "[]")[1:-1])]
    kind = op["kind"]
    if delem != elem or len(ddims) != len(sdims) or any(ddims[d] != 1 for d in red) or not red:
        raise Unsupported(f"vreduce form: {line.strip()}")
    flt = _is_float(elem)
    if kind == "sum":
        ident, comb = ("0.0", "arith.addf") if flt else ("0", "arith.addi")
    elif kind == "prod":
        ident, comb = ("1.0", "arith.mulf") if flt else ("1", "arith.muli")
    elif kind in ("max", "min") and flt:
        ident = "0x" + {"f32": "FF800000", "f16": "FC00", "bf16": "FF80"}[elem]
        if kind == "min":
            ident = "0x" + {"f32": "7F800000", "f16": "7C00", "bf16": "7F80"}[elem]
        comb = "arith.maximumf" if kind == "max" else "arith.minimumf"
    elif kind in ("max", "min"):
        lo, hi = _INT_RANGE[elem]
        ident, comb = (str(lo), "arith.maxsi") if kind == "max" else (str(hi), "arith.minsi")
    else:
        raise Unsupported(f"vreduce <{kind}>: {line.strip()}")
    dims = ", ".join(f"d{i}" for i in range(len(sdims)))
    out_dims = ", ".join("0" if i in red else f"d{i}" for i in range(len(sdims)))
    iters = ", ".join('"reduction"' if i in red else '"parallel"' for i in range(len(sdims)))
    c = f"%atlas_red_id{uid}"
    return [f"{indent}{c} = arith.constant {ident} : {elem}",
            f"{indent}linalg.fill ins({c} : {elem}) outs({dst} : {dst_ty})",
            f"{indent}linalg.generic {{indexing_maps = [affine_map<({dims}) -> ({dims})>, "
            f"affine_map<({dims}) -> ({out_dims})>], iterator_types = [{iters}]}} ins({src} : {src_ty}) "
            f"outs({dst} : {dst_ty}) {{",
            f"{indent}^bb0(%atlas_g{uid}_a: {elem}, %atlas_g{uid}_acc: {elem}):",
            f"{indent}  %atlas_g{uid}_r = {comb} %atlas_g{uid}_acc, %atlas_g{uid}_a : {elem}",
            f"{indent}  linalg.yield %atlas_g{uid}_r : {elem}",
            f"{indent}}}"]


def _varange(indent: str, line: str, uid: int) -> list:
    """``varange offset[%o] strides[%s0, ..] outs(%dst)``: dst[i0, ..] = o + sum(ik * sk), cast to dst's integer
    type (hfusion.arange's own linalg form: linalg.index, muli/addi on index, index_cast)."""
    m = re.fullmatch(r"\s*hivm\.hir\.varange offset\[(%[\w$.-]+)\] strides\[([^\]]*)\] outs\((%[\w$.-]+) : "
                     r"(memref<.*>)\)", line)
    if not m:
        raise Unsupported(f"unexpected varange form: {line.strip()}")
    offset, strides, dst, dst_ty = m.group(1), split_top(m.group(2)), m.group(3), m.group(4)
    ddims, delem, _, _ = parse_memref(dst_ty)
    if len(strides) != len(ddims) or delem not in _INT_RANGE:
        raise Unsupported(f"varange with {len(strides)} strides into {dst_ty}: {line.strip()}")
    rank = len(ddims)
    dims = ", ".join(f"d{i}" for i in range(rank))
    p = f"%atlas_g{uid}_"
    body = [f"^bb0({p}out: {delem}):", f"  {p}zero = arith.constant 0 : index",
            f"  {p}acc0 = arith.addi {offset}, {p}zero : index"]
    for k, s in enumerate(strides):
        body += [f"  {p}i{k} = linalg.index {k} : index", f"  {p}t{k} = arith.muli {p}i{k}, {s} : index",
                 f"  {p}acc{k + 1} = arith.addi {p}acc{k}, {p}t{k} : index"]
    body += [f"  {p}r = arith.index_cast {p}acc{rank} : index to {delem}", f"  linalg.yield {p}r : {delem}"]
    iters = ", ".join(['"parallel"'] * rank)
    return [f"{indent}linalg.generic {{indexing_maps = [affine_map<({dims}) -> ({dims})>], "
            f"iterator_types = [{iters}]}} outs({dst} : {dst_ty}) {{",
            *(indent + ln for ln in body), f"{indent}}}"]


def _copy(indent: str, line: str, uid: int) -> list:
    """A plain ``hivm.hir.copy`` (no padding or other attributes, same shape and element type): memref.copy.
    The upstream conversion handles only the GM forms."""
    op = parse_hivm_op(line)
    if op["kind"] or op["attrs"] or "temp_buffer" in op or len(op["ins"]) != 1 or len(op["outs"]) != 1:
        raise Unsupported(f"hivm.hir.copy form: {line.strip()}")
    (src, src_ty), (dst, dst_ty) = op["ins"][0], op["outs"][0]
    sdims, selem, _, _ = parse_memref(src_ty)
    ddims, delem, _, _ = parse_memref(dst_ty)
    if sdims != ddims or selem != delem or None in sdims:
        raise Unsupported(f"hivm.hir.copy between {src_ty} and {dst_ty}: {line.strip()}")
    return [f"{indent}memref.copy {src}, {dst} : {src_ty} to {dst_ty}"]


EXPANSIONS["hivm.hir.copy"] = _copy
EXPANSIONS["hivm.hir.varange"] = _varange
EXPANSIONS.update({name: _elementwise for name in
                   ("hivm.hir.vshl", "hivm.hir.vshr", "hivm.hir.vcmp", "hivm.hir.vcast", "hivm.hir.vnot",
                    *(f"hivm.hir.{b}" for b in _BINARY))})
EXPANSIONS["hivm.hir.vreduce"] = _vreduce


# ---------------------------------------------------------------- HFusion ops (cube kernels' level) without a CPU form
def _parse_hfusion(line: str) -> tuple:
    """(name, {attribute: word}, parse_hivm_op fields) of ``hfusion.<name> {attrs} ins(..) outs(..)`` on memrefs."""
    m = re.match(r"\s*hfusion\.(\w+) (?:(\{.*?\}) )?(ins\(.*)$", line)
    if not m:
        raise Unsupported(f"unexpected form: {line.strip()}")
    name, attrs = m.group(1), {}
    for field in split_top((m.group(2) or "{}")[1:-1]):
        key, _, value = field.partition("=")
        attrs[key.strip()] = _attr_word(value.strip())
    op = parse_hivm_op(f"hivm.hir.{name} " + m.group(3))
    if op["attrs"] or op["kind"] or len(op["outs"]) != 1:
        raise Unsupported(f"hfusion.{name} with {op['attrs']}: {line.strip()}")
    return name, attrs, op


def _hfusion_cast(indent: str, line: str, uid: int) -> list:
    """``hfusion.cast {cast, round_mode, enable_overflow} ins(..) outs(..)``: the conversion of ``hivm.hir.vcast``
    (what it becomes on the NPU), so both levels saturate float -> int with NaN -> 0."""
    _, attrs, op = _parse_hfusion(line)
    if set(attrs) - {"cast", "round_mode", "enable_overflow"}:
        raise Unsupported(f"hfusion.cast attributes {sorted(attrs)}: {line.strip()}")
    (dst, dst_ty), = op["outs"]
    src, delem = _elem(op["ins"][0][1]), parse_memref(dst_ty)[1]
    # enable_overflow: out-of-range float -> int wraps instead of saturating; fine only where nothing is out of range
    if attrs.get("enable_overflow") == "true" and _is_float(src) and not _is_float(delem) \
            and not (src == "f16" and delem in ("i32", "i64")):
        raise Unsupported(f"hfusion.cast {src} -> {delem} with enable_overflow: {line.strip()}")
    body = _cast_body(src, delem, attrs.get("round_mode"), attrs.get("cast"), line)
    return _generic(indent, uid, op["ins"], dst, dst_ty, body, False, line)


def _hfusion_atomic_rmw(indent: str, line: str, uid: int) -> list:
    """``hfusion.atomic_rmw ins(%v) outs(%gm) atomic_kind = <add>``: gm += v. Blocks run one after another, so a
    plain read-modify-write is what the atomic computes; atomicity itself is not checked."""
    m = re.fullmatch(r"\s*hfusion\.atomic_rmw (ins\(.*\)) atomic_kind = <(\w+)>", line)
    if not m or m.group(2) != "add":
        raise Unsupported(f"hfusion.atomic_rmw form: {line.strip()}")
    op = parse_hivm_op("hivm.hir.atomic_rmw " + m.group(1))
    (src, src_ty), = op["ins"]
    (dst, dst_ty), = op["outs"]
    elem = parse_memref(dst_ty)[1]
    if op["attrs"] or parse_memref(src_ty)[1] != elem:
        raise Unsupported(f"hfusion.atomic_rmw between {src_ty} and {dst_ty}: {line.strip()}")
    add = "arith.addf" if _is_float(elem) else "arith.addi"
    return _generic(indent, uid, op["ins"], dst, dst_ty, [f"%r = {add} %out, %a : {elem}"], False, line)


def _hfusion_atomic_xchg(indent: str, line: str, uid: int) -> list:
    """``hfusion.atomic_xchg ins(%v) outs(%gm)`` whose old value is unused: a copy."""
    m = re.fullmatch(r"\s*hfusion\.atomic_xchg ins\((%[\w$.-]+) : (memref<.*>)\) outs\((%[\w$.-]+) : (memref<.*>)\)",
                     line)
    if not m:
        raise Unsupported(f"hfusion.atomic_xchg form: {line.strip()}")
    return [f"{indent}memref.copy {m.group(1)}, {m.group(3)} : {m.group(2)} to {m.group(4)}"]


_HF_BINARY = {"shli": "shli", "shrsi": "shrsi", "shrui": "shrui", "vand": "andi", "vor": "ori", "vxor": "xori",
              "maxf": "maxnumf", "minf": "minnumf"}


def _hfusion_elementwise(indent: str, line: str, uid: int) -> list:
    """hfusion.elemwise_binary / elemwise_unary / compare / select / bitcast on memrefs, as a linalg.generic with
    our scalar semantics (``--linalg-generalize-named-ops`` is not used: its vnot is the identity in 1.2.0)."""
    name, attrs, op = _parse_hfusion(line)
    (dst, dst_ty), = op["outs"]
    delem, a_ty = parse_memref(dst_ty)[1], _elem(op["ins"][0][1])
    fun = attrs.get("fun") or attrs.get("compare_fn")
    if name == "elemwise_binary" and fun in _HF_BINARY:
        body = [f"%r = arith.{_HF_BINARY[fun]} %a, %b : {a_ty}"]
    elif name == "elemwise_unary" and fun == "vnot":
        body = ["%ones = arith.constant true" if a_ty == "i1" else f"%ones = arith.constant -1 : {a_ty}",
                f"%r = arith.xori %a, %ones : {a_ty}"]
    elif name == "compare" and fun and fun[1:] in _CMP and delem == "i1":
        pred = _CMP[fun[1:]][0 if _is_float(a_ty) else 1]
        body = [f"%r = arith.{'cmpf' if _is_float(a_ty) else 'cmpi'} {pred}, %a, %b : {a_ty}"]
    elif name == "select" and not attrs:
        body = [f"%r = arith.select %a, %b, %c : {delem}"]
    elif name == "bitcast" and not attrs:
        body = [f"%r = arith.bitcast %a : {a_ty} to {delem}"]
    else:
        raise Unsupported(f"hfusion.{name} {attrs} has no CPU lowering here: {line.strip()}")
    return _generic(indent, uid, op["ins"], dst, dst_ty, body, False, line)


HFUSION_EXPANSIONS = {"hfusion.cast": _hfusion_cast, "hfusion.atomic_rmw": _hfusion_atomic_rmw,
                      "hfusion.atomic_xchg": _hfusion_atomic_xchg,
                      "hfusion.barrier": lambda indent, line, uid: [],  # one block at a time: nothing to order
                      "hfusion.arange": lambda indent, line, uid: _varange(
                          indent, line.replace("hfusion.arange", "hivm.hir.varange", 1), uid),
                      **{f"hfusion.{name}": _hfusion_elementwise
                         for name in ("elemwise_binary", "elemwise_unary", "compare", "select", "bitcast")}}


_CUMSUM = re.compile(r"^(\s*)(%[\w$.-]+) = hfusion\.cumsum (%[\w$.-]+) : (tensor<[^>]*>) cum_dims = \[(\d+)\] "
                     r"reverse = (true|false) -> (tensor<[^>]*>)$")


def _cumsum(m, uid: int) -> list:
    """``hfusion.cumsum`` (a tensor op one-shot bufferization does not know) on integers, as a linalg.generic:
    out[.., j, ..] = sum over k <= j (k >= j reversed) of x[.., k, ..]."""
    indent, res, src, ty, dim, reverse, res_ty = m.groups()
    if ty != res_ty:
        raise Unsupported(f"hfusion.cumsum from {ty} to {res_ty}")
    *dims, elem = ty[len("tensor<"):-1].split("x")
    dim = int(dim)
    if elem not in _INT_RANGE:
        raise Unsupported(f"hfusion.cumsum on {elem}: the order of a float sum is not known")
    rank = len(dims)
    iters = ", ".join(['"parallel"'] * rank + ['"reduction"'])
    all_dims = ", ".join(f"d{i}" for i in range(rank + 1))
    src_map = ", ".join(f"d{rank}" if i == dim else f"d{i}" for i in range(rank))
    out_map = ", ".join(f"d{i}" for i in range(rank))
    p = f"%atlas_g{uid}_"
    return [f"{indent}{p}zero = arith.constant 0 : {elem}",
            f"{indent}{p}empty = tensor.empty() : {ty}",
            f"{indent}{p}init = linalg.fill ins({p}zero : {elem}) outs({p}empty : {ty}) -> {ty}",
            f"{indent}{res} = linalg.generic {{indexing_maps = [affine_map<({all_dims}) -> ({src_map})>, "
            f"affine_map<({all_dims}) -> ({out_map})>], iterator_types = [{iters}]}} ins({src} : {ty}) "
            f"outs({p}init : {ty}) {{",
            f"{indent}^bb0({p}a: {elem}, {p}acc: {elem}):",
            f"{indent}  {p}j = linalg.index {dim} : index",
            f"{indent}  {p}k = linalg.index {rank} : index",
            f"{indent}  {p}take = arith.cmpi {'uge' if reverse == 'true' else 'ule'}, {p}k, {p}j : index",
            f"{indent}  {p}v = arith.select {p}take, {p}a, {p}zero : {elem}",
            f"{indent}  {p}r = arith.addi {p}acc, {p}v : {elem}",
            f"{indent}  linalg.yield {p}r : {elem}",
            f"{indent}}} -> {ty}"]


def rewrite_hfusion(module: str) -> tuple:
    """(module, Abi) of a cube kernel at the HFusion level: one entry, GM tensors without an address space,
    program ids as its last three i32 arguments; hfusion.cumsum expanded (the rest after bufferization)."""
    funcs = functions(module)
    entries = [f for f in funcs if f.is_entry]
    if len(funcs) != 1 or len(entries) != 1:
        raise Unsupported(f"expected one hacc.entry function at the HFusion level, found {[f.name for f in funcs]}")
    entry = entries[0]
    if "hivm.hir." in module:
        raise Unsupported("HIVM ops in the HFusion-level module")
    args = _entry_args(entry, None)
    if [t for _, t in args[-6:]] != ["i32"] * 6 or any(k != "scalar" for k, _ in args[-6:]):
        raise Unsupported(f"{entry.name}: the last six arguments are not the grid and program id (i32)")
    lines = []
    for line in entry.body.split("\n"):
        m = _CUMSUM.match(line)
        if m:
            lines.extend(_cumsum(m, len(lines)))
        elif "hfusion.cumsum" in line:
            raise Unsupported(f"unexpected hfusion.cumsum form: {line.strip()}")
        else:
            lines.append(line)
    # without the module's and arguments' attributes: hacc is a dialect triton-ascend's LLVM does not load
    header = f"func.func @{entry.name}({', '.join(f'{n}: {t}' for n, t, _ in entry.args)}) {{"
    text = "module {\n  " + header + "\n".join(lines) + "}\n}\n"
    return text, Abi(entry.name, args, [], False, program_ids=True)


def _expand_hfusion(module: str) -> str:
    """The bufferized module with HFUSION_EXPANSIONS applied."""
    lines = []
    for line in module.split("\n"):
        op = _bare_op(line)
        if op in HFUSION_EXPANSIONS:
            lines.extend(HFUSION_EXPANSIONS[op](line[:len(line) - len(line.lstrip())], line, len(lines)))
        else:
            lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------- compile to a shared library
def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(ascend.bishengir_compile()), name)


def hivm_module(linalg: str, soc: str, timeout: float = 300, before: str = HIVM_LEVEL) -> str:
    """The module bishengir-compile (the compile check's options) has just before pass ``before``."""
    with tempfile.TemporaryDirectory(prefix="atlas-run-") as tmp:
        src = os.path.join(tmp, "kernel.ttadapter.mlir")
        with open(src, "w") as f:
            f.write(linalg)
        cmd = [ascend.bishengir_compile(), src, f"--target={soc}", *ascend.BISHENG_OPTIONS,
               f"--mlir-print-ir-before={before}", *DUMP, "-o", os.path.join(tmp, "kernel")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return last_dump(proc.stdout + proc.stderr, before)


_OP_NAME = re.compile(r"^\s*(?:%[^=]+= )?\"?([a-z_]+\.[\w.]+)", re.M)


def _opt(module: str, passes: tuple, workdir: str, what: str) -> str:
    """``bishengir-opt`` with ``passes`` on the module text; Unsupported with its first error if it fails."""
    src = os.path.join(workdir, "in.mlir")
    with open(src, "w") as f:
        f.write(module)
    proc = subprocess.run([_tool("bishengir-opt"), src, *passes], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        err = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[-300:])
        raise Unsupported(f"bishengir-opt could not {what}: {err.strip()[:400]}")
    return proc.stdout


def _no_ops_left(module: str, prefixes: tuple, what: str) -> None:
    left = sorted({op for op in _OP_NAME.findall(module) if op.startswith(prefixes)})
    if left:
        raise Unsupported(f"{what}: {', '.join(left)}")


def to_llvm_dialect(module: str, workdir: str) -> str:
    """HIVM-level module (rewritten) -> LLVM dialect."""
    module = _opt(module, CONVERT, workdir, "convert the HIVM ops to upstream MLIR")
    # convert-linalg-to-loops would quietly lower a leftover hfusion structured op by its region
    _no_ops_left(module, ("hivm.", "hfusion.", "hacc."), "no CPU lowering for")
    return _lower(module, workdir)


def hfusion_to_llvm_dialect(module: str, workdir: str) -> str:
    """HFusion-level module (rewritten) -> LLVM dialect: bufferize, then every HFusion op as ours."""
    module = _expand_hfusion(_opt(module, BUFFERIZE, workdir, "bufferize the HFusion-level module"))
    _no_ops_left(module, ("hivm.", "hfusion.", "hacc.", "tensor.", "bufferization."), "no CPU lowering for")
    return _lower(module, workdir)


def _lower(module: str, workdir: str) -> str:
    module = _opt(module, LOWERING, workdir, "lower the patched module to LLVM")
    left = sorted({op for op in _OP_NAME.findall(module) if not op.startswith(("llvm.", "builtin."))})
    if left:
        raise Unsupported(f"ops left after lowering to LLVM: {', '.join(left)}")
    return module


def shared_object(llvm_mlir: str, path: str) -> None:
    """LLVM-dialect module -> x86-64 shared library at ``path`` (triton-ascend's bundled LLVM, then gcc)."""
    from triton._C.libtriton import ir, llvm
    work = f"{path}.{os.getpid()}.d"  # parallel workers may build the same library
    os.makedirs(work, exist_ok=True)
    mlir_path = os.path.join(work, "kernel.llvm.mlir")
    with open(mlir_path, "w") as f:
        f.write(llvm_mlir)
    context = ir.context()
    ir.load_dialects(context)
    module = ir.parse_mlir_module(mlir_path, context)
    llvm_module = llvm.to_module(module, llvm.context())
    llvm.init_targets()
    obj = llvm.translate_to_asm(str(llvm_module), "x86_64-unknown-linux-gnu", "x86-64", "", [], False, True)
    obj_path = os.path.join(work, "kernel.o")
    with open(obj_path, "wb") as f:
        f.write(obj if isinstance(obj, bytes) else obj.encode("latin1"))
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", work + ".so", obj_path, RT_C], check=True,
                   capture_output=True)
    os.replace(work + ".so", path)
    shutil.rmtree(work, ignore_errors=True)


def _cache_dir() -> str:
    return os.path.join(os.path.dirname(ascend._cache_dir()), "ascend_run")


def build(linalg: str, soc: str, target_ub: int, cube: bool = False) -> tuple:
    """(path of the shared library, Abi) for one Linalg module on ``soc``; cached by content. ``cube``: a kernel
    with tl.dot, run at the HFusion level."""
    import pickle
    me = b""
    for source in (__file__, RT_C):  # the runner and its C runtime
        with open(source, "rb") as f:
            me += f.read()
    tool = str(os.path.getsize(ascend.bishengir_compile())).encode()
    key = hashlib.sha256(b"\0".join([RUNNER_VERSION.encode(), me, tool, soc.encode(), linalg.encode(),
                                     str(cube).encode()]))
    key = key.hexdigest()[:32]
    os.makedirs(_cache_dir(), exist_ok=True)
    so, abi_path = (os.path.join(_cache_dir(), key + ext) for ext in (".so", ".abi"))
    if os.path.exists(so) and os.path.exists(abi_path):
        with open(abi_path, "rb") as f:
            return so, pickle.load(f)
    with tempfile.TemporaryDirectory(prefix="atlas-run-") as tmp:
        if cube:
            module, abi = rewrite_hfusion(hivm_module(linalg, soc, before=HFUSION_LEVEL))
            shared_object(hfusion_to_llvm_dialect(module, tmp), so)
        else:
            module, abi = rewrite(hivm_module(linalg, soc), {"ub": target_ub})
            shared_object(to_llvm_dialect(module, tmp), so)
    with open(f"{abi_path}.{os.getpid()}.tmp", "wb") as f:
        pickle.dump(abi, f)
    os.replace(f"{abi_path}.{os.getpid()}.tmp", abi_path)
    return so, abi


# ---------------------------------------------------------------- run
class LaunchError(RuntimeError):
    """The CPU run of a launch misbehaved: a store outside a tensor, or output that depends on poison."""


_DESC = 5  # fields of a lowered 1-D memref: allocated, aligned, offset, size, stride


def _desc(ptr: int, nbytes: int) -> list:
    return [ctypes.c_void_p(ptr), ctypes.c_void_p(ptr), ctypes.c_int64(0), ctypes.c_int64(nbytes),
            ctypes.c_int64(1)]


_SCALAR = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "f32": ctypes.c_float}


class CpuKernel:
    """A built kernel: call it with the Triton arguments (tensors, scalars) and the grid."""

    def __init__(self, so: str, abi: Abi, pool_bytes: int = 0):
        self.abi = abi
        lib = ctypes.CDLL(so)
        self.fn = getattr(lib, abi.name)
        self.fn.restype = None
        self.poison = ctypes.c_uint8.in_dll(lib, "atlas_poison")

    def __call__(self, grid: tuple, args: list) -> None:
        import numpy as np
        import torch
        grid = tuple(grid) + (1,) * (3 - len(grid))
        user = [(k, t) for k, t in self.abi.args if k in ("tensor", "scalar")]
        pid = [0, 0, 0] if self.abi.program_ids else []  # HFusion level: the program id follows the grid
        if len(user) != len(args) + 3 + len(pid):
            raise Unsupported(f"{self.abi.name}: the lowered entry takes {len(user)} tensor/scalar arguments, "
                              f"expected {len(args)} plus 3 grid sizes" + (" and 3 program ids" if pid else ""))
        # one guarded copy per storage: stores outside it land in the guards
        storages, views = {}, []
        for (kind, ty), a in zip(user, args):
            if kind == "tensor":
                if not isinstance(a, torch.Tensor):
                    raise Unsupported(f"{self.abi.name}: a pointer argument got {type(a).__name__}")
                st = a.untyped_storage()
                key = st.data_ptr()
                if key not in storages:
                    raw = torch.empty(0, dtype=torch.uint8).set_(st).numpy()
                    buf = np.full(GUARD + raw.size + GUARD, 0xA5, np.uint8)
                    buf[GUARD:GUARD + raw.size] = raw
                    storages[key] = (raw, buf, buf.copy())
                views.append((key, a.storage_offset() * a.element_size()))
        def run(poison: int, reverse: bool) -> list:
            """GM outputs of the launch with on-chip memory poisoned ``poison``, blocks in (reverse) order."""
            for raw, buf, initial in storages.values():
                buf[:] = initial
            work = {k: np.zeros(1 << 16, np.uint8) for k in ("lock", "workspace")}
            pools = [np.full(max(n, 1), poison, np.uint8) for _, n in self.abi.pools]
            flat, it = [], iter(views)
            vals = iter(list(args) + list(grid) + pid)
            for kind, ty in self.abi.args:
                if kind == "ffts":
                    flat.append(ctypes.c_int64(0))
                elif kind in work:
                    flat += _desc(work[kind].ctypes.data, work[kind].size)
                elif kind == "tensor":
                    next(vals)
                    key, off = next(it)
                    buf = storages[key][1]
                    flat += _desc(buf.ctypes.data + GUARD + off, buf.size - GUARD - off)
                else:
                    flat.append(_SCALAR[ty](next(vals)))
            n_blocks = grid[0] * grid[1] * grid[2]
            subs = SUB_BLOCKS if self.abi.uses_sub_block else 1
            self.poison.value = poison  # local buffers (memref.alloc) start as this byte
            order = [(blk, sub) for blk in range(n_blocks) for sub in range(1 if pid else subs)]
            for blk, sub in reversed(order) if reverse else order:
                if pid:
                    ids = (blk % grid[0], blk // grid[0] % grid[1], blk // (grid[0] * grid[1]))
                    self.fn(*flat[:-3], *(ctypes.c_int32(v) for v in ids))
                    continue
                for p in pools:
                    p[:] = poison
                self.fn(*flat, *sum((_desc(p.ctypes.data, p.size) for p in pools), []),
                        *(ctypes.c_int64(v) for v in (blk, n_blocks, sub, subs)))
            for raw, buf, initial in storages.values():
                if (buf[:GUARD] != 0xA5).any() or (buf[-GUARD:] != 0xA5).any():
                    raise LaunchError(f"{self.abi.name}: a store landed outside a tensor's storage")
            return [buf[GUARD:-GUARD].copy() for _, buf, _ in storages.values()]

        def differ(xs, ys) -> int:
            return sum(int((x != y).sum()) for x, y in zip(xs, ys))

        # blocks in order with poison 0x00, then in reverse with 0xFF; a third run tells which change mattered
        results = [run(POISON[0], False), run(POISON[1], True)]
        if differ(*results):
            if differ(results[0], run(POISON[1], False)):
                raise LaunchError(f"{self.abi.name}: GM output differs between on-chip memory poisoned 0x00 and 0xFF "
                                  f"({differ(*results)} bytes): the kernel reads on-chip memory it never wrote")
            raise LaunchError(f"{self.abi.name}: GM output depends on the order the blocks run in "
                              f"({differ(*results)} bytes)")
        for (raw, _, _), out in zip(storages.values(), results[-1]):
            raw[:] = out


_TT = {"torch.int32": "*i32", "torch.uint8": "*u8", "torch.int8": "*i8", "torch.int16": "*i16",
       "torch.int64": "*i64", "torch.float16": "*fp16", "torch.bfloat16": "*bf16", "torch.float32": "*fp32"}


def _torch_dtype(pointer_type: str):
    """'*fp16' -> torch.float16: the element dtype of a variant's pointer type (the inverse of _TT)."""
    import torch
    return getattr(torch, next(t for t, p in _TT.items() if p == pointer_type).removeprefix("torch."))


class Launcher:
    """Stands in for ``_backend.launch``: builds (cached) and runs each launch on the CPU for ``target``."""

    def __init__(self, target, prefer: str = ""):
        self.target = target
        self.prefer = prefer  # the variant label to take when several compile the same kernel
        self.launched = []   # (kernel name, variant label, config) per launch
        self._built = {}

    def __call__(self, name, kernel, grid, *args, **kwargs):
        import torch
        from ..autotune import KERNELS, split_config
        from . import Job
        from .ascend import lower
        spec = KERNELS[name]
        values = dict(zip([p.name for p in kernel.params], args))
        values.update(kwargs)
        runtime = [values[p.name] for p in kernel.params if not p.is_constexpr]
        constexpr = {p.name: values[p.name] if p.name in values else p.default for p in kernel.params
                     if p.is_constexpr and (p.name in values or p.has_default)}
        # the variant with these constexprs; among several, the one whose pointer types match (a launcher may pass
        # any tensor for a pointer its constexprs leave unused), the one being checked if it is among them
        matches = [v for v in spec.variants if all(constexpr.get(k) == c for k, c in v.constexprs.items())]
        typed = [v for v in matches if all(_TT.get(str(values[n].dtype)) == t for n, t in v.types.items()
                                           if isinstance(values.get(n), torch.Tensor))]
        candidates = typed or matches
        preferred = [v for v in candidates if v.label == self.prefer]
        variant = (preferred or candidates)[0] if preferred or typed or len(matches) == 1 else None
        if variant is None:
            got = {k: c for k, c in constexpr.items() if k in spec.variants[0].constexprs}
            raise Unsupported(f"{name}: no registered variant matches this launch ({got})")
        config = {k: c for k, c in constexpr.items() if k not in variant.constexprs}
        config.update({k: kwargs[k] for k in split_config(kwargs)[1]})
        key = (name, variant.label, tuple(sorted(config.items())))
        if key not in self._built:
            linalg = lower(Job(spec, variant, self.target, dict(split_config(config)[0]), True))
            self._built[key] = CpuKernel(*build(linalg, self.target.name, self.target.ub_bytes, spec.uses_dot))
        self.launched.append(key)
        self._built[key](grid, runtime)


# ---------------------------------------------------------------- ops on the CPU as if on the target
import contextlib  # noqa: E402


@contextlib.contextmanager
def on_cpu_as(target, prefer: str = ""):
    """Inside the block, ops given CPU tensors launch their kernels through a ``Launcher`` for ``target``."""
    from .. import _backend
    launcher = Launcher(target, prefer)
    saved = _backend.use_kernel, _backend.target_for, _backend.launch
    _backend.use_kernel = lambda op, device: True
    _backend.target_for = lambda device: target
    _backend.launch = launcher
    try:
        yield launcher
    finally:
        _backend.use_kernel, _backend.target_for, _backend.launch = saved


# ---------------------------------------------------------------- cases: the op on test inputs vs the reference
def _bits(t):
    import torch
    return t.contiguous().view(torch.uint8) if t.dtype != torch.bool else t


def _int4_case(kind: str, label: str):
    """(call, expected) for one int4_pack kernel variant: small ragged shapes that leave partial tiles."""
    import torch
    from .. import int4_pack as ops
    from ..reference import int4_pack as ref
    g = torch.Generator().manual_seed(0)
    if kind in ("pack", "unpack"):
        out_dtype = torch.int32 if label.startswith("int32") else torch.uint8
        layout = "nz" if "-nz" in label else "nd"
        rows, cols = 40, 200
        w = torch.randint(-8, 8, (rows, cols), dtype=torch.int32, generator=g)
        if kind == "pack":
            if label.endswith("strided"):
                w = w.t().contiguous().t()
            return (lambda: ops.convert_weight_to_int4pack(w, out_dtype=out_dtype, layout=layout),
                    ref.convert_weight_to_int4pack(w, out_dtype, layout))
        packed = ref.convert_weight_to_int4pack(w, out_dtype, layout)
        return lambda: ops.unpack_int4(packed, layout=layout, shape=(rows, cols)), w
    bits = int(label.split("bit")[0])
    dtype = {8: torch.int8, 16: torch.float16, 32: torch.int32}[bits]
    b, m, n = 2, 37, 75
    x = torch.randint(-128, 128, (b, m, n), generator=g).to(dtype)
    if label.endswith("strided"):
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "nd_to_nz":
        return lambda: ops.nd_to_nz(x), ref.nd_to_nz(x)
    nz = ref.nd_to_nz(x)
    return lambda: ops.nz_to_nd(nz, (m, n)), x


def _rope_case(label: str):
    """(call, expected) for one dequant_rope_quant_kvcache variant: the variant's own dtypes and features on the
    shapes of tests/test_rope_quant_kvcache.py (b=2, s=3, nq=4, nkv=2, caches of random bytes); q/k/v bit for bit
    and the WHOLE caches byte for byte, as those tests compare."""
    import torch
    from .. import rope_quant_kvcache as op
    from ..autotune import KERNELS
    from ..reference import rope_quant_kvcache as ref
    v = next(v for v in KERNELS["dequant_rope_quant_kvcache.fused"].variants if v.label == label)
    c, ty = v.constexprs, v.types
    g = torch.Generator().manual_seed(0)
    b, s, nq, nkv, d = 2, 3, 4, 2, 2 * c["BLOCK_D2"]
    h = (nq + 2 * nkv) * d
    if c["DEQUANT"]:
        x = torch.randint(-3000, 3000, (b, s, h), dtype=torch.int32, generator=g)
    else:
        x = (torch.randn((b, s, h), generator=g) * 2).to(_torch_dtype(ty["x_ptr"]))
    angle = torch.rand((b, s, 1, d), generator=g) * 6.3
    cos, sin = angle.cos().to(_torch_dtype(ty["cos_ptr"])), angle.sin().to(_torch_dtype(ty["cos_ptr"]))
    if c["PAGE"]:
        c1, c2 = 3, 4
        indices = torch.randperm(c1 * c2, generator=g)[: b * s]
    else:
        c1, c2 = b + 1, s + 5
        indices = torch.randint(0, c2 - s + 1, (b,), generator=g)
    indices = indices.to(_torch_dtype(ty["idx_ptr"]))
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
            kw["bias"] = torch.randn(h, generator=g).to(_torch_dtype(ty["bias_ptr"]))
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


# nsa_compress variants name their geometry (CHUNK, SLOTS, PHASES); the (block, stride) the tests use for each
_NSA_GEOMETRIES = ((32, 16), (64, 32), (128, 16), (128, 128))
_NSA_SEQ_ENDS = [0, 5, 40, 40, 137, 300]  # tests/test_nsa_compress.py's RAGGED


def _nsa_case(kind: str, label: str):
    """(call, expected) for one nsa_compress kernel variant on tests/test_nsa_compress.py's ragged sequences
    (N = 2, D = 32), compared by the interpreter tests' rule (testing.TOLERANCES of the dtype). The backward
    and dw_reduce cases run the gradient op, which launches both; each compares dinput and dweight."""
    import importlib
    import torch
    from ..reference import nsa_compress as ref
    op = importlib.import_module("..nsa_compress", __package__)  # the package's nsa_compress is the function
    dtype = torch.float16 if label.startswith("fp16") else torch.bfloat16
    if kind == "dw_reduce":  # a geometry whose backward (SLOTS = 1) matches, so the reduction is seen alone
        block, stride = _NSA_GEOMETRIES[3]
    else:
        block, stride = next((bl, st) for bl, st in _NSA_GEOMETRIES
                             if label.endswith("-c{CHUNK}s{SLOTS}p{PHASES}".format(**op.geometry(bl, st))))
    g = torch.Generator().manual_seed(0)
    asl = _NSA_SEQ_ENDS
    x = torch.randn(asl[-1], 2, 32, generator=g).to(dtype)
    w = (torch.randn(block, 2, generator=g) / block ** 0.5).to(dtype)
    if kind == "fwd":
        return (lambda: [torch.ops.atlas.nsa_compress(x, w, block, stride, asl)],
                [("out", ref.nsa_compress(x, w, block, stride, asl), "close")])
    n_out = sum(ref.num_windows(n, block, stride) for _, n in ref.sequence_bounds(asl))
    grad = torch.randn((n_out, 2, 32), generator=torch.Generator().manual_seed(1)).to(dtype)
    dx, dw = ref.nsa_compress_grad(grad, x, w, block, stride, asl)
    return (lambda: list(torch.ops.atlas.nsa_compress_grad(grad, x, w, block, stride, asl)),
            [("dinput", dx, "close"), ("dweight", dw, "close")])


def _qmm_case(label: str):
    """(call, expected) for one quant_matmul.gemm variant: its operand formats, dtypes and epilogue, read off the
    variant, through the public op on a ragged shape (m, k, n) = (37, 304, 200), or (5, 1024, 200) for -decode
    labels, whose K is split over the cores; a8w4 with k = 512 (two 256-row groups). Integer outputs compare
    byte for byte, float ones by the interpreter tests' tolerances."""
    import importlib
    import torch
    from ..autotune import KERNELS
    from ..compress_codec import compress_weight
    from ..reference import compress_matmul as cref
    from ..reference.int4_pack import convert_weight_to_int4pack, nd_to_nz  # inputs: no other kernel's launch
    from ..reference import quant_matmul as ref
    qm, cm = (importlib.import_module(f"..{mod}", __package__) for mod in ("quant_matmul", "compress_matmul"))
    v = next(v for v in KERNELS["quant_matmul.gemm"].variants if v.label == label)
    c, ty = v.constexprs, v.types
    group_k = c["GROUP_K"]
    decode = label.endswith("-decode")
    m, k, n = 5 if decode else 37, 1024 if decode else 304, 200
    k = 2 * group_k if group_k else k
    g = torch.Generator().manual_seed(0)

    def ints(lo, hi, *size):
        return torch.randint(lo, hi, size, generator=g, dtype=torch.int32)

    def scales(*size):
        return torch.rand(size, generator=g) * 2e-3 + 1e-4
    out = _torch_dtype(ty["out_ptr"])
    bias = None
    if c["BIAS_MODE"] == qm.BIAS_INT.value:
        bias = ints(-20000, 20000, n)
    elif c["BIAS_MODE"] == qm.BIAS_FLOAT.value:
        bias = (torch.randn(n, generator=g) * 10).to(_torch_dtype(ty["bias_ptr"]))
    if c["B_FORMAT"] == qm.B_SPARSE.value:
        x1, w = ints(-128, 128, m, k).to(torch.int8), ints(-128, 128, n, k).to(torch.int8)
        x2, index, info = compress_weight(w)
        if out == torch.int32:
            cw = cm.prepare_compressed_weight(x2, index, info)
            return lambda: cm._gemm(x1, cw, bias, None), [("out", cref.int_matmul(x1, w) + bias, "bytes")]
        deq = scales(n).view(torch.int32).to(torch.int64).reshape(1, n)
        return (lambda: cm.matmul_compress_dequant(x1, x2, index, bias, deq, compress_info=info),
                [("out", cref.matmul_compress_dequant(x1, x2, index, bias, deq, info), "close")])
    x1 = (convert_weight_to_int4pack(ints(-8, 8, m, k)) if c["A_FORMAT"] == qm.A_INT4.value
          else ints(-128, 128, m, k).to(torch.int8))
    kw = {"output_dtype": out}
    if c["B_FORMAT"] == qm.B_INT4_N.value:
        x2 = convert_weight_to_int4pack(ints(-8, 8, k, n))
    elif c["B_FORMAT"] == qm.B_INT4_K.value:
        x2 = convert_weight_to_int4pack(ints(-8, 8, n, k)).t()
    else:
        x2 = ints(-128, 128, k, n).to(torch.int8)
        if c["B_FORMAT"] == qm.B_NZ.value:
            x2, kw["x2_layout"], kw["x2_shape"] = nd_to_nz(x2), "nz", (k, n)
        elif c["B_K_UNIT"]:
            x2 = x2.t().contiguous().t()
    offset = scales(n) * 1e4 if c["OFFSET_MODE"] != qm.OFFSET_NONE.value else None
    if group_k:
        scale = ref.trans_quant_param(scales(k // group_k, n))
    elif ty["scale_ptr"] == "*i64":
        scale = ref.trans_quant_param(scales(n), offset if c["OFFSET_MODE"] == qm.OFFSET_FROM_SCALE.value else None)
    else:
        scale = scales(n).to(_torch_dtype(ty["scale_ptr"]))
    if c["OFFSET_MODE"] == qm.OFFSET_TENSOR.value:
        kw["offset"] = offset
    if c["HAS_PERTOKEN"]:
        kw["pertoken_scale"] = torch.rand(m, generator=g) + 0.5
    if bias is not None:
        kw["bias"] = bias
    expected = ref.quant_matmul(x1, x2, scale, group_k=group_k, **kw)
    if group_k:
        kw["group_sizes"] = [0, 0, group_k]
    rule = "close" if expected.is_floating_point() else "bytes"
    return lambda: qm.quant_matmul(x1, x2, scale, **kw), [("out", expected, rule)]


CASES = {f"int4_pack.{k}": (lambda k: lambda label: _int4_case(k, label))(k)
         for k in ("pack", "unpack", "nd_to_nz", "nz_to_nd")}
CASES["dequant_rope_quant_kvcache.fused"] = _rope_case
CASES["quant_matmul.gemm"] = _qmm_case
CASES["add_rms_norm_quant.fused"] = lambda label: __import__(
    f"{__package__}.cases_add_rms_norm_quant", fromlist=["case"]).case("add_rms_norm_quant.fused", label)
CASES.update({k: (lambda k: lambda label: __import__(f"{__package__}.cases_dynamic_quant", fromlist=["case"])
                  .case(k, label))(k) for k in ("dynamic_quant.rowwise", "quantize.static")})
CASES.update({f"nsa_compress.{k}": (lambda k: lambda label: _nsa_case(k, label))(k)
              for k in ("fwd", "bwd", "dw_reduce")})


def compare(name: str, got, expected, rule: str):
    """None if ``got`` passes ``rule`` against ``expected`` ("bytes": byte for byte; "close": the interpreter
    tests' testing.TOLERANCES for the dtype), else what differs."""
    import torch
    from ..testing import TOLERANCES
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return f"{name}: got {got.dtype}{tuple(got.shape)}, expected {expected.dtype}{tuple(expected.shape)}"
    diff = (_bits(got) != _bits(expected)).nonzero()
    if not len(diff):
        return None
    if rule == "bytes":
        return f"{name}: {len(diff)} bytes differ from the reference, first at byte index {tuple(diff[0].tolist())}"
    rtol, atol = TOLERANCES[expected.dtype]
    try:
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    except AssertionError as e:
        return f"{name}: " + " ".join(str(e).split())
    return None


def run_job(job) -> tuple:
    """(status, detail, seconds): status is "match", "MISMATCH", "unsupported" or "error"."""
    import time
    import torch
    from ..autotune import override_config
    start = time.time()
    case = CASES.get(job.spec.name)
    if case is None:
        return "unsupported", "no CPU-run case for this kernel yet", 0.0
    call, expected = case(job.variant.label)
    try:
        with on_cpu_as(job.target, job.variant.label) as launcher, override_config(job.spec.name, job.config):
            got = call()
    except Unsupported as e:
        return "unsupported", str(e), time.time() - start
    except LaunchError as e:
        return "MISMATCH", str(e), time.time() - start
    except Exception as e:  # noqa: BLE001 - the adapter, bishengir, LLVM or gcc failed: report it, keep the others
        return "error", ascend._first_error(e), time.time() - start
    ran = [k for k in launcher.launched if k[0] == job.spec.name]
    if not ran or ran[0][1] != job.variant.label:
        return "error", f"the op launched {launcher.launched}, not {job.spec.name}[{job.variant.label}]", \
            time.time() - start
    if isinstance(got, torch.Tensor):
        got = [got]
    if not isinstance(expected, list):
        expected = [("out", expected, "bytes")]
    problems = [p for g, (n, e, rule) in zip(got, expected) if (p := compare(n, g, e, rule))]
    if len(got) != len(expected):
        problems.append(f"{len(got)} outputs, expected {len(expected)}")
    if problems:
        return "MISMATCH", "; ".join(problems), time.time() - start
    exact = all(torch.equal(_bits(g), _bits(e)) for g, (_, e, _) in zip(got, expected))
    return "match", "byte-exact" if exact else "within tolerance", time.time() - start


_JOBS: list = []


def _run_index(i: int) -> tuple:
    return run_job(_JOBS[i])  # jobs hold jit functions, which do not pickle: forked workers take them by index


def main(targets: list, prefix: str = "", quiet: bool = False, workers: int = 1, sample: int = 0,
         full: bool = False, executor=None) -> int:
    """Every shipped config of every kernel with a case (names starting with one of the comma-separated
    ``prefix``es), plus ``sample`` other configs of each space (``full``: all of them), on each target, in
    ``workers`` forked processes (executor: autotune.executor.Options; local/ray: long-lived workers with a
    timeout per job, autotune/runs.py): print a table, return 0 if all match."""
    import concurrent.futures
    import multiprocessing
    from . import jobs, print_table
    _JOBS[:] = jobs(targets, full=full, prefix=tuple(prefix.split(",")), sample=sample)
    rows, counts = [], {}
    if executor is not None and executor.kind in ("local", "ray"):
        from ..autotune.runs import check_jobs
        results = check_jobs(_JOBS, "ascend-run", executor, workers)
    else:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
            results = list(pool.map(_run_index, range(len(_JOBS)), chunksize=1))
    for job, (status, detail, secs) in zip(_JOBS, results):
        counts[status] = counts.get(status, 0) + 1
        level = (" (HFusion level)" if job.spec.uses_dot else "") + ("" if job.shipped else " (sampled config)")
        if not (quiet and status == "match"):
            rows.append([status, job.label, f"{secs:.1f}s", (detail + level)[:300]])
    _JOBS.clear()
    print_table(rows, ["status", "kernel[variant] target config", "time", "detail"])
    print("\nascend-run: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0 if set(counts) <= {"match"} else 1


def cli(args) -> int:
    """``python -m atlas_kernels.checks ascend-run`` (the shared --targets / --kernels / --sample / --full / --jobs /
    -q options)."""
    import atlas_kernels  # noqa: F401  (registers every kernel)
    from .. import _backend
    if _backend.TRITON_FLAVOUR != "triton-ascend":
        print("ascend-run needs triton-ascend (run it in the env that has it, e.g. .venv-ascend/bin/python)")
        return 2
    try:
        ascend.bishengir_compile()
    except ascend.ToolMissing as e:
        print(e)
        return 2
    from ..autotune.executor import options_of
    return main((args.targets or "Ascend910B2,Ascend910_9391").split(","), args.kernels, args.quiet, args.jobs,
                args.sample or 0, args.full, options_of(args))
