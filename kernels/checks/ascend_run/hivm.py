"""The HIVM-level rewrite of a vector kernel's entry function (see the package docstring, step 1): block and
sub-block indices become arguments, each planned on-chip buffer a view of one byte pool per address space."""
from __future__ import annotations

import re

from .hivm_ops import EXPANSIONS
from .mlir import _ELEM_BITS, Func, Unsupported, closing, functions, parse_memref, split_top

# hivm ops of the cube unit and of cross-core sync: no CPU lowering in ascendnpu-ir 1.2.0
CUBE_OPS = ("hivm.hir.mmadL1", "hivm.hir.mmad", "hivm.hir.nd2nz", "hivm.hir.fixpipe", "hivm.hir.sync_block",
            "hivm.hir.matmul", "hivm.hir.batchMmadL1")
INDEX_OPS = {"hivm.hir.get_block_idx": "blk", "hivm.hir.get_block_num": "blk_num",
             "hivm.hir.get_sub_block_idx": "sub", "hivm.hir.get_sub_block_num": "sub_num"}
EXTRA_SCALARS = ("blk", "blk_num", "sub", "sub_num")


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
        elif op in EXPANSIONS:  # an op with a result (hivm.hir.bitcast)
            lines.extend(EXPANSIONS[op](m.group(1), line, len(lines)))
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
