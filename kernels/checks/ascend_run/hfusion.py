"""The HFusion level (cube kernels): the entry taken before convert-hfusion-to-hivm, hfusion.cumsum expanded, and after
bufferization every HFusion op written out as upstream MLIR (``HFUSION_EXPANSIONS``)."""
from __future__ import annotations

import re

from .hivm import Abi, _bare_op, _entry_args
from .hivm_ops import (_CMP, _INT_RANGE, _attr_word, _cast_body, _elem, _generic, _is_float, _varange,
                       parse_hivm_op)
from .mlir import Unsupported, functions, parse_memref, split_top

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
