"""The package's import structure: no import circle between its modules, and the runtime imports no verification
tool (checks, meters, negative controls)."""
import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"kernels": "atlas_kernels", "autotune": "atlas_kernels.autotune", "reference": "atlas_kernels.reference"}


def _modules() -> dict:
    """{module name: (path, is_package)} for every .py file under the package folders (pyproject's package-dir)."""
    mods = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            mods[".".join([name, *(parts[:-1] if is_pkg else parts)])] = (path, is_pkg)
    return mods


def import_graph() -> dict:
    """{module: modules it imports}, from every import statement (function-level ones included: a lazy import
    still ties the two modules together). ``from pkg import name`` is an edge to pkg.name when that is a module,
    else to pkg."""
    mods = _modules()
    graph = {}
    for mod, (path, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                deps.update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names)
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert "atlas_kernels.gemm.kernel" in graph and "atlas_kernels.checks.ascend" in graph, "the walk missed modules"
    found = cycles(graph)
    detail = [{m: sorted(d for d in graph[m] if d in comp) for m in comp} for comp in found]
    assert not found, f"import cycles: {detail}"


def test_the_cycle_finder_finds_a_cycle():
    """What the test above relies on: a lazy back-import (the old quant_matmul <-> compress_matmul) is a cycle."""
    graph = import_graph()
    graph["atlas_kernels.gemm.formats"] = graph["atlas_kernels.gemm.formats"] | {"atlas_kernels.quant_matmul"}
    assert any("atlas_kernels.quant_matmul" in c and "atlas_kernels.gemm.formats" in c for c in cycles(graph))


def test_the_ops_do_not_import_each_others_private_gemm():
    """compress_matmul reaches the GEMM through the gemm package, not through quant_matmul."""
    graph = import_graph()
    assert "atlas_kernels.quant_matmul" not in graph["atlas_kernels.compress_matmul"]
    assert any(d.startswith("atlas_kernels.gemm") for d in graph["atlas_kernels.compress_matmul"])


def test_import_atlas_kernels_loads_no_verification_tool():
    """Model code pays for no checker: the checks (and their negative controls), the traffic meter and the test
    helpers stay out of sys.modules."""
    code = ("import sys, atlas_kernels\n"
            "print(sorted(m for m in sys.modules if m.startswith(('atlas_kernels.checks', 'atlas_kernels.testing'))))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = eval(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], loaded
