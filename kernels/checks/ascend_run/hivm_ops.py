"""HIVM ops that bishengir-opt's upstream conversion lacks, written out as upstream MLIR (mostly linalg.generic);
``EXPANSIONS`` maps an op name to its expansion. The HFusion level reuses the generic builders."""
from __future__ import annotations

import re

from .mlir import _ELEM_BITS, Unsupported, closing, parse_memref, split_top

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


def _bitcast(indent: str, line: str, uid: int) -> list:
    """``%r = hivm.hir.bitcast %src : memref<S x A> -> memref<S x B>`` (same shape, same element width): a new
    buffer holding src's bits as B (arith.bitcast per element). A copy, not a view: right while the kernel only
    reads the result, as the scale decode that emits it does (a write through it would be lost: the run would
    then mismatch, not pass)."""
    m = re.fullmatch(r"(\s*)(%[\w$.-]+) = hivm\.hir\.bitcast (%[\w$.-]+) : (memref<.*>) -> (memref<.*>)", line)
    if not m:
        raise Unsupported(f"unexpected bitcast form: {line.strip()}")
    _, res, src, src_ty, dst_ty = m.groups()
    sdims, selem, _, _ = parse_memref(src_ty)
    ddims, delem, _, _ = parse_memref(dst_ty)
    if sdims != ddims or any(not isinstance(d, int) for d in ddims) or _ELEM_BITS.get(selem) != _ELEM_BITS.get(delem):
        raise Unsupported(f"bitcast form: {line.strip()}")
    return [f"{indent}{res} = memref.alloc() : {dst_ty}",
            *_generic(indent, uid, [(src, src_ty)], res, dst_ty, [f"%r = arith.bitcast %a : {selem} to {delem}"],
                      False, line)]


EXPANSIONS["hivm.hir.bitcast"] = _bitcast
EXPANSIONS["hivm.hir.copy"] = _copy
EXPANSIONS["hivm.hir.varange"] = _varange
EXPANSIONS.update({name: _elementwise for name in
                   ("hivm.hir.vshl", "hivm.hir.vshr", "hivm.hir.vcmp", "hivm.hir.vcast", "hivm.hir.vnot",
                    *(f"hivm.hir.{b}" for b in _BINARY))})
EXPANSIONS["hivm.hir.vreduce"] = _vreduce
