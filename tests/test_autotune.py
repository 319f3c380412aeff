"""Tuned-config stores, lookup order, the tuning CLI and warmup (all on CPU; stores live in tmp_path)."""
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import atlas_kernels as ak
from atlas_kernels import _backend
from atlas_kernels.autotune import (ASCEND_TARGETS, CUDA_TARGETS, KERNELS, KernelSpec, Tuning, Variant, get_target,
                                    override_config, pick_config, pow2_bucket, register_kernel, store, tune)
from atlas_kernels.autotune.__main__ import main as cli
from atlas_kernels.testing import kernel_ran

SM90 = get_target("sm_90")
PACK = "int4_pack.pack"


@pytest.fixture(autouse=True)
def stores(tmp_path, monkeypatch):
    """Point the user and shipped stores at tmp_path: tests never touch the package's files or ~/.cache."""
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    monkeypatch.setenv(store.ENV_DIR, str(user))
    monkeypatch.setattr(store, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(store, "RECHECK_S", 0.0)
    store.invalidate()
    yield user, shipped
    store.invalidate()


def measured(kernel=PACK, variant="int32-nd", bucket=(), config=None, **prov):
    config = config or {"BLOCK_R": 8, "BLOCK_P": 32, "num_warps": 2}
    return store.Entry(kernel, variant, tuple(bucket), config,
                       {"source": "measured", "device": "test", "date": "2026-01-01T00:00:00Z",
                        **store.current_versions(), "median_ms": 1.0, **prov})


def default(kernel=PACK, variant="int32-nd", target=SM90):
    spec = KERNELS[kernel]
    return spec.default(target, spec.variant(variant))


# ---------------------------------------------------------------- store files

def test_round_trip(tmp_path):
    entries = [measured(bucket=(4096, 4096)), measured(variant="uint8-nz", config={"BLOCK_R": 16, "BLOCK_P": 8,
                                                                                   "num_warps": 2}),
               store.Entry("other.kernel", "x", (), {"BLOCK": 64}, {"source": "derived"}, {"M": 3})]
    path = store.merge_into(tmp_path / "s", "sm_90", entries)
    assert path == tmp_path / "s" / "sm_90.json"
    back = store.read(path)
    assert sorted(back, key=lambda e: e.key) == sorted(entries, key=lambda e: e.key)
    data = json.loads(path.read_text())
    assert data["schema"] == store.SCHEMA and data["target"] == "sm_90"
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"], "temp file left behind"


def test_merge_replaces_same_key_and_keeps_others(tmp_path):
    d = tmp_path / "s"
    store.merge_into(d, "sm_90", [measured(bucket=(1,)), measured(bucket=(2,))])
    new = measured(bucket=(2,), config={"BLOCK_R": 32, "BLOCK_P": 8, "num_warps": 2})
    store.merge_into(d, "sm_90", [new])
    by_key = {e.key: e for e in store.read(store.store_file(d, "sm_90"))}
    assert len(by_key) == 2 and by_key[new.key] == new


@pytest.mark.parametrize("content, why", [
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": 99, "target": "sm_90", "entries": []}), "schema 99"),
    (json.dumps([1, 2]), "schema None"),
    (json.dumps({"schema": 1, "target": "sm_80", "entries": []}), "for target 'sm_80'"),
])
def test_corrupt_or_foreign_file_warns_and_falls_back(stores, content, why):
    user, shipped = stores
    store.merge_into(shipped, "sm_90", [measured(bucket=())])  # a good shipped entry to fall back to
    user.mkdir()
    (user / "sm_90.json").write_text(content)
    with pytest.warns(store.StoreWarning, match=why):
        cfg = pick_config(PACK, SM90, "int32-nd")
    assert cfg == measured().config
    # cached: a second launch neither re-reads nor warns again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pick_config(PACK, SM90, "int32-nd") == measured().config


def test_malformed_entry_is_skipped_not_fatal(stores):
    user, _ = stores
    good = measured(variant="uint8-nd").to_json()
    user.mkdir()
    (user / "sm_90.json").write_text(json.dumps({"schema": 1, "target": "sm_90", "entries": [
        {"kernel": PACK}, {**good, "config": {"BLOCK_R": "big"}}, good]}))
    with pytest.warns(store.StoreWarning) as caught:
        assert pick_config(PACK, SM90, "uint8-nd") == good["config"]
    messages = [str(w.message) for w in caught]
    assert any("entry 0 ignored: entry lacks variant" in m for m in messages)
    assert any("entry 1 ignored: config must map names to ints" in m for m in messages)


def test_writing_over_a_corrupt_file_moves_it_aside(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "sm_90.json").write_text("garbage")
    with pytest.warns(store.StoreWarning, match="moved it to"):
        store.merge_into(d, "sm_90", [measured()])
    assert (d / "sm_90.json.corrupt").read_text() == "garbage"
    assert store.read(d / "sm_90.json") == [measured()]


def _writer(directory, tag, n):
    for i in range(n):
        store.merge_into(directory, "sm_90", [store.Entry(f"k.{tag}", "v", (i,), {"B": i}, {"source": "derived"})])


def test_two_concurrent_writers_lose_nothing(tmp_path):
    n = 120
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path / "s", tag, n)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    keys = {e.key for e in store.read(tmp_path / "s" / "sm_90.json")}
    assert keys == {(f"k.{t}", "v", (i,)) for t in "ab" for i in range(n)}


# ---------------------------------------------------------------- lookup

def test_lookup_order(stores):
    user, shipped = stores
    shape_key = (4096, 4096)
    c_ship_any = {"BLOCK_R": 8, "BLOCK_P": 8, "num_warps": 2}
    c_ship_exact = {"BLOCK_R": 8, "BLOCK_P": 16, "num_warps": 2}
    c_user_exact = {"BLOCK_R": 8, "BLOCK_P": 32, "num_warps": 2}
    assert pick_config(PACK, SM90, "int32-nd", shape_key) == default()
    assert store.resolve(PACK, SM90, "int32-nd", shape_key).source == "derived"
    store.merge_into(shipped, "sm_90", [measured(config=c_ship_any)])
    assert pick_config(PACK, SM90, "int32-nd", shape_key) == c_ship_any      # shape-less entry
    assert pick_config(PACK, SM90, "int32-nz", shape_key) == default(variant="int32-nz")  # other variant
    store.merge_into(shipped, "sm_90", [measured(bucket=shape_key, config=c_ship_exact)])
    assert pick_config(PACK, SM90, "int32-nd", shape_key) == c_ship_exact    # exact bucket beats shape-less
    assert pick_config(PACK, SM90, "int32-nd", (8, 8)) == c_ship_any
    store.merge_into(user, "sm_90", [measured(bucket=shape_key, config=c_user_exact)])
    choice = store.resolve(PACK, SM90, "int32-nd", shape_key)
    assert (choice.config, choice.source) == (c_user_exact, "user")         # user beats shipped
    assert pick_config(PACK, get_target("sm_80"), "int32-nd", shape_key) == default(target=get_target("sm_80"))
    forced = {"BLOCK_R": 64, "BLOCK_P": 64}
    with override_config(PACK, forced):
        assert pick_config(PACK, SM90, "int32-nd", shape_key) == forced       # override beats everything
    # the old three-argument call still works
    assert pick_config(PACK, SM90, "int32-nd") == c_ship_any


def test_cache_follows_file_changes(stores, monkeypatch):
    user, _ = stores
    monkeypatch.setenv(store.ENV_RELOAD, "1")  # opt-in (a tuning session); by default files are read once
    a, b = {"BLOCK_R": 8, "BLOCK_P": 8, "num_warps": 2}, {"BLOCK_R": 16, "BLOCK_P": 8, "num_warps": 2}
    store.merge_into(user, "sm_90", [measured(config=a)])
    assert pick_config(PACK, SM90, "int32-nd") == a
    # another process rewrites the file (no invalidate() in this process): the mtime check picks it up
    store.write(user / "sm_90.json", "sm_90", [measured(config=b)])
    os.utime(user / "sm_90.json", ns=(1, 1))
    assert pick_config(PACK, SM90, "int32-nd") == b


def test_other_versions_are_used_but_flagged(stores, capsys):
    user, _ = stores
    old = measured(triton="triton 2.0.0", library="0.0.1")
    store.merge_into(user, "sm_90", [old])
    assert pick_config(PACK, SM90, "int32-nd") == old.config
    notes = store.stale(old)
    assert len(notes) == 2 and "triton 2.0.0" in notes[0] and "0.0.1" in notes[1]
    assert store.stale(measured()) == []
    assert cli(["show", "--op", PACK, "--target", "sm_90", "--variant", "int32-nd"]) == 0
    assert "STALE: measured with triton 'triton 2.0.0'" in capsys.readouterr().out


def test_config_outside_the_space_is_ignored(stores):
    user, _ = stores
    store.merge_into(user, "sm_90", [measured(config={"BLOCK_R": 8, "BLOCK_P": 8, "num_warps": 32}),
                                     measured(variant="int32-nz", config={"BLOCK_ROWS": 8})])
    with pytest.warns(store.StoreWarning, match="not in the kernel's config space"):
        assert pick_config(PACK, SM90, "int32-nd") == default()
    with pytest.warns(store.StoreWarning, match="not in the kernel's config space"):
        assert pick_config(PACK, SM90, "int32-nz") == default(variant="int32-nz")


def test_launcher_uses_the_stored_config_for_its_shape_bucket(stores, monkeypatch):
    user, _ = stores
    interp = get_target("interpreter")
    cfg = {"BLOCK_R": 8, "BLOCK_P": 16, "num_warps": 2}
    assert cfg in KERNELS[PACK].space(interp, KERNELS[PACK].variant("int32-nd"))
    store.merge_into(user, "interpreter", [measured(bucket=(32, 64), config=cfg)])
    seen = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda name, k, grid, *a, **kw: (seen.append(kw), real(name, k, grid, *a,
                                                                                                  **kw))[1])
    w = torch.randint(-8, 8, (20, 64), dtype=torch.int32)
    with kernel_ran(PACK):
        ak.convert_weight_to_int4pack(w)          # R=20 -> bucket 32, C=64
        ak.convert_weight_to_int4pack(w[:, :56])  # C=56: no entry -> derived default
    assert (seen[0]["BLOCK_R"], seen[0]["BLOCK_P"]) == (8, 16)
    assert (seen[1]["BLOCK_R"], seen[1]["BLOCK_P"]) == (64, 256)


def test_gemm_launch_uses_the_stored_config_for_its_shape_bucket(stores, monkeypatch):
    """quant_matmul's launcher passes its (m, k, n) bucket to pick_config: a bucketed entry reaches the launch."""
    user, _ = stores
    gemm, interp = KERNELS["quant_matmul.gemm"], get_target("interpreter")
    cfg = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}
    assert cfg in gemm.space(interp, gemm.variant("i8-nd-decode"))
    assert cfg != gemm.default(interp, gemm.variant("i8-nd-decode"))
    store.merge_into(user, "interpreter", [measured("quant_matmul.gemm", "i8-nd-decode", (16, 64, 64), cfg)])
    seen = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda name, k, grid, *a, **kw: (seen.append((name, kw)),
                                                                            real(name, k, grid, *a, **kw))[1])
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randint(-128, 128, (9, 64), dtype=torch.int8, generator=gen)
    scale = torch.rand(96, generator=gen) + 0.5
    for n in (64, 96):  # m=9 -> bucket 16, k=64; n=64 has the entry, n=96 none (derived default)
        x2 = torch.randint(-128, 128, (64, n), dtype=torch.int8, generator=gen)
        with kernel_ran("quant_matmul.gemm"):
            ak.quant_matmul(x1, x2, scale[:n], output_dtype=torch.float16)
    blocks = [(kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"]) for name, kw in seen if name == "quant_matmul.gemm"]
    dflt = gemm.default(interp, gemm.variant("i8-nd-decode"))
    assert blocks == [(16, 32, 32), (dflt["BLOCK_M"], dflt["BLOCK_N"], dflt["BLOCK_K"])]
    assert pick_config("quant_matmul.gemm", interp, "i8-nd-decode", m=9, k=64, n=64) == cfg
    with pytest.raises(TypeError):
        gemm.tuning.key(m=9, k=64)


def test_pow2_bucket():
    assert [pow2_bucket(n) for n in (0, 1, 2, 3, 4, 5, 4096, 4097)] == [1, 1, 2, 4, 4, 8, 4096, 8192]


# ---------------------------------------------------------------- spaces and defaults of every registered kernel

# at import, before any test runs: nsa_compress adds other (l, d) geometries on first use, and on Ascend those
# have no stored compiler verdicts, so no space to tune over (their launches take the derived default)
REGISTERED_VARIANTS = {name: list(spec.variants) for name, spec in KERNELS.items()}


@pytest.mark.parametrize("target", ASCEND_TARGETS + CUDA_TARGETS)
def test_every_space_is_pruned_and_holds_its_default(target):
    t = get_target(target)
    for name, spec in KERNELS.items():
        if name.startswith("test."):
            continue
        for v in REGISTERED_VARIANTS.get(name, ()):
            space = spec.space(t, v)
            assert space, f"{name}[{v.label}] has an empty space on {target}"
            assert spec.default(t, v) in space, f"{name}[{v.label}] default is not in its space on {target}"
            for c in space:
                if t.is_ascend:
                    assert not {"num_warps", "num_stages"} & set(c), f"{name}: GPU launch options on {target}: {c}"
                tiles = [val for k, val in c.items() if k.startswith("BLOCK")]
                assert all(val & (val - 1) == 0 for val in tiles), f"{name}: block sizes must be powers of two: {c}"


# ---------------------------------------------------------------- measuring (fake timer) and warmup

_LAST_BLOCK = []


def _register_test_spec():
    """A kernel-less spec whose output depends on its config: measuring needs no Triton here."""
    name = "test.fake"
    if name not in KERNELS:
        def make_call(shape, variant, device):
            def call():
                c = pick_config(name, SM90, variant.label)
                _LAST_BLOCK.append(c["BLOCK"])
                return torch.tensor([0 if c["BLOCK"] == 16 else 1])  # BLOCK=16 is wrong
            return call
        register_kernel(KernelSpec(name, object(), [Variant("v", {})],
                                   space=lambda t, v: [{"BLOCK": b} for b in (16, 32, 64, 128)],
                                   default=lambda t, v: {"BLOCK": 64},
                                   tuning=Tuning(("M",), lambda s: (pow2_bucket(s["M"]),), make_call, ({"M": 5},))))
    return KERNELS[name]


def test_measure_picks_the_fastest_correct_config_and_stores_it(stores):
    user, _ = stores
    spec = _register_test_spec()
    ms = {16: 0.1, 32: 0.5, 64: 1.0, 128: 0.7}

    def timer(fn):
        fn()
        return ms[_LAST_BLOCK[-1]]
    result = tune.measure(spec, spec.variants[0], {"M": 5}, torch.device("cpu"), SM90, timer=timer)
    assert result.complete and result.default == {"BLOCK": 64} and result.default_ms == 1.0
    notes = {c["BLOCK"]: note for c, _, note in result.times}
    assert "differs" in notes[16], "a wrong config must never be picked"
    assert result.best == (0.5, {"BLOCK": 32})
    entry = tune.entry_of(result, spec, torch.device("cpu"))
    assert entry.bucket == (8,) and entry.provenance["median_ms"] == 0.5 and entry.provenance["default_ms"] == 1.0
    store.merge_into(user, "sm_90", [entry])
    assert pick_config(spec.name, SM90, "v", (8,)) == {"BLOCK": 32}
    assert pick_config(spec.name, SM90, "v", (16,)) == {"BLOCK": 64}


def test_measure_stops_at_the_deadline():
    spec = _register_test_spec()
    result = tune.measure(spec, spec.variants[0], {"M": 5}, torch.device("cpu"), SM90, timer=lambda fn: 1.0,
                          deadline=0.0)
    assert not result.complete and result.times == []


def test_cli_tune_measures_writes_and_respects_the_budget(tmp_path, monkeypatch, capsys):
    import atlas_kernels.autotune.__main__ as main_module
    _register_test_spec()
    ms = {16: 0.1, 32: 0.5, 64: 1.0, 128: 0.7}

    def timer(fn):
        fn()
        return ms[_LAST_BLOCK[-1]]
    monkeypatch.setattr(main_module, "timing_refusal", lambda device: None)  # let the CPU stand in for a device
    monkeypatch.setattr(tune, "do_bench_median", timer)
    assert cli(["tune", "--op", "test.fake", "--shapes", "M=5|100", "--store", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 entries" in out
    assert "M=100  BLOCK=32     0.5000   1.0000      2.00x    4/1" in out, out
    entries = {e.bucket: e for e in store.read(tmp_path / "out" / "interpreter.json")}
    assert set(entries) == {(8,), (128,)}
    for e in entries.values():
        assert e.config == {"BLOCK": 32} and e.provenance["median_ms"] == 0.5 and e.provenance["configs"] == 3
        assert e.provenance["triton"] == store.current_versions()["triton"] and e.provenance["date"].endswith("Z")
    assert cli(["tune", "--op", "test.fake", "--budget", "0", "--store", str(tmp_path / "b")]) == 0
    assert "1 (kernel, variant, shape) groups with fewer than two configs timed within --budget 0" in \
        capsys.readouterr().out
    assert not (tmp_path / "b" / "interpreter.json").exists()


def test_cli_tune_exits_nonzero_when_the_store_cannot_be_written(tmp_path, monkeypatch, capsys):
    import atlas_kernels.autotune.__main__ as main_module
    _register_test_spec()
    ms = {16: 0.1, 32: 0.5, 64: 1.0, 128: 0.7}

    def timer(fn):
        fn()
        return ms[_LAST_BLOCK[-1]]
    monkeypatch.setattr(main_module, "timing_refusal", lambda device: None)
    monkeypatch.setattr(tune, "do_bench_median", timer)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the store directory should be")
    assert cli(["tune", "--op", "test.fake", "--shapes", "M=5", "--store", str(blocker)]) == 1
    captured = capsys.readouterr()
    assert "cannot write tuned-config store" in captured.err and "wrote" not in captured.out


def test_warmup_compiles_with_the_config_a_plain_call_picks():
    with kernel_ran(PACK):
        report = ak.warmup(PACK, shapes=[{"R": 16, "C": 64}], device="cpu", variants=["int32-nd"])
    assert report == [{"kernel": PACK, "variant": "int32-nd", "shape": {"R": 16, "C": 64},
                       "config": {"BLOCK_R": 64, "BLOCK_P": 256}, "source": "derived",
                       "seconds": report[0]["seconds"]}]
    with pytest.raises(ValueError, match="tune=True needs a CUDA GPU or an Ascend NPU"):
        ak.warmup(PACK, device="cpu", tune=True)


# ---------------------------------------------------------------- CLI

def test_parse_shapes_and_budget():
    assert tune.parse_shapes("R=3..16,C=8|24;R=7,C=8") == [
        {"R": 4, "C": 8}, {"R": 4, "C": 24}, {"R": 8, "C": 8}, {"R": 8, "C": 24}, {"R": 16, "C": 8},
        {"R": 16, "C": 24}, {"R": 7, "C": 8}]
    assert [tune.parse_budget(t) for t in ("90", "90s", "2m", "1.5h")] == [90, 90, 120, 5400]
    for bad in ("R", "R=x", "R=8..2"):
        with pytest.raises(ValueError, match="--shapes"):
            tune.parse_shapes(bad)
    with pytest.raises(ValueError, match="--budget"):
        tune.parse_budget("soon")


def test_tune_refuses_to_time_on_the_interpreter(capsys):
    assert cli(["tune", "--op", "int4_pack"]) == 2
    out = capsys.readouterr().out
    assert "refusing to time" in out and "--dry-run" in out


def test_unknown_op_is_a_clear_error(capsys):
    assert cli(["show", "--op", "nope", "--target", "sm_90"]) == 2
    assert "no kernel named 'nope'" in capsys.readouterr().err


def test_show_names_the_source(stores, capsys):
    user, _ = stores
    store.merge_into(user, "sm_90", [measured(bucket=(4096, 4096))])
    assert cli(["show", "--op", "int4_pack.pack", "--target", "sm_90", "--shape", "R=4000,C=4096"]) == 0
    lines = capsys.readouterr().out.splitlines()
    nd = next(line for line in lines if "int32-nd" in line)
    nz = next(line for line in lines if "int32-nz" in line)
    assert "BLOCK_R=8 BLOCK_P=32 num_warps=2" in nd and " user " in nd and "measured on test" in nd
    assert "derived default" in nz and "[4096, 4096]" in nz


def test_diff(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    same, changed = measured(bucket=(1,)), measured(bucket=(2,))
    store.merge_into(a, "sm_90", [same, changed, measured(bucket=(3,))])
    store.merge_into(b, "sm_90", [same, measured(bucket=(2,), config={"BLOCK_R": 16, "BLOCK_P": 8, "num_warps": 2}),
                                  measured(bucket=(4,))])
    assert cli(["diff", str(a), str(b / "sm_90.json")]) == 1
    out = capsys.readouterr().out
    assert "1 same, 1 differ, 1 only in" in out and "! sm_90 int4_pack.pack[int32-nd] bucket [2]" in out
    assert cli(["diff", str(a), str(a)]) == 0
    capsys.readouterr()
    assert cli(["diff", str(a), "derived"]) == 1  # the measured configs differ from the derived default
    assert "0 same, 3 differ" in capsys.readouterr().out


TINY = '''
import triton
import triton.language as tl
from atlas_kernels.autotune import KernelSpec, Variant, register_kernel

@triton.jit
def tiny(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

# BLOCK=48 is not a power of two: tl.arange rejects it, so the check must report it as failed
register_kernel(KernelSpec("tiny.add", tiny, [Variant("fp32", {"x_ptr": "*fp32", "n": "i32"})],
                           space=lambda t, v: [{"BLOCK": b, "num_warps": 1} for b in (32, 48, 64)],
                           default=lambda t, v: {"BLOCK": 64, "num_warps": 1}))
'''


def test_cli_dry_run_end_to_end_on_cpu(tmp_path):
    (tmp_path / "tiny_kernel.py").write_text(TINY)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import tiny_kernel
        from atlas_kernels.autotune.__main__ import main
        sys.exit(main(["tune", "--dry-run", "--op", "tiny", "--target", "sm_90,Ascend910B2", "--jobs", "1",
                       "--json", {str(tmp_path / 'rows.json')!r}]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["ATLAS_ASCEND_PYTHON"] = "/bin/false"  # the Ascend half cannot run here: it must say so, not pass
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert "tiny.add  sm_90   cuda   3        2       1       1/1" in out, out + proc.stderr
    assert "FAIL tiny.add[fp32] sm_90 BLOCK=48 num_warps=1" in out
    assert "sm_90 (CUDA compile): 3 configs, 2 passed, 1 failed" in out
    assert "Ascend910B2: SKIPPED (ascend check): /bin/false ($ATLAS_ASCEND_PYTHON) exited with status 1" in out
    assert proc.returncode == 2
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["config"]["BLOCK"], r["ok"], r["default"]) for r in rows] == [(64, True, True), (32, True, False),
                                                                           (48, False, False)]
    assert "tune sm_90" not in proc.stderr and "sm_90 cuda [" in proc.stderr  # the progress bar


@pytest.mark.parametrize("kernel, variant, shape", [(PACK, "uint8-nz", {"R": 20, "C": 64}),
                                                    ("int4_pack.unpack", "int32-nz", {"R": 20, "C": 64}),
                                                    ("int4_pack.nz_to_nd", "16bit", {"B": 2, "M": 20, "N": 40})])
def test_int4_pack_harness_runs_every_config_with_identical_output(kernel, variant, shape):
    from atlas_kernels.autotune.candidates import candidates
    spec = KERNELS[kernel]
    target = get_target("Ascend910B2")
    with kernel_ran(kernel):
        result = tune.measure(spec, spec.variant(variant), shape, torch.device("cpu"), target, timer=lambda fn: 1.0)
    assert result.complete and len(result.times) == len(candidates(spec, target, spec.variant(variant), shape)) > 1
    assert [note for _, _, note in result.times if note] == []


# ---------------------------------------------------------------- candidate lists and harnesses of every kernel

def test_every_kernel_has_a_harness_and_a_short_ranked_candidate_list():
    from atlas_kernels.autotune.candidates import CANDIDATE_LIMIT, candidates
    for name, spec in KERNELS.items():
        if name.startswith(("test.", "tiny.")):
            continue
        assert spec.tuning is not None and spec.tuning.work is not None, f"{name} has no tuning harness / cost model"
        groups = tune.tuned_groups(spec)
        assert groups, f"{name}: no variant is tuned at its tuning shapes"
        for target in ("Ascend910B2", "sm_90"):
            t = get_target(target)
            for variant, shape in groups:
                cands = candidates(spec, t, variant, shape)
                assert 1 <= len(cands) <= CANDIDATE_LIMIT and cands[0] == spec.default(t, variant)
                space = spec.space(t, variant)
                assert all(c in space for c in cands[1:]), f"{name}[{variant.label}] {target}: a candidate outside the space"


def test_candidates_follow_the_cost_model_and_keep_unknown_keys_apart():
    from atlas_kernels.autotune.candidates import Work, candidates, ranked
    gemm = KERNELS["quant_matmul.gemm"]
    decode, big = gemm.variant("i8-nd-decode"), gemm.variant("i8-nd")
    tiny = ranked(gemm, SM90, decode, {"m": 16, "k": 64, "n": 64})
    assert len(tiny) < len(gemm.space(SM90, decode)) / 10   # tiles past the problem collapse into one candidate
    assert [s for s, _ in tiny] == sorted(s for s, _ in tiny)
    large = candidates(gemm, SM90, big, {"m": 4096, "k": 4096, "n": 4096})
    assert max(c["BLOCK_M"] * c["BLOCK_N"] for c in large[1:]) >= 128 * 128   # big problems rank big tiles first
    assert all(c["BLOCK_M"] * c["BLOCK_N"] >= 64 * 64 for c in large[1:6])
    # a key the model does not know (a future SPLIT_K) keeps configs apart instead of merging them
    spec = KernelSpec("test.split", object(), [Variant("v", {})],
                      space=lambda t, v: [{"BLOCK": 64, "SPLIT_K": s} for s in (1, 2, 4)],
                      default=lambda t, v: {"BLOCK": 64, "SPLIT_K": 1},
                      tuning=Tuning(("M",), lambda s: (), lambda *a: None, (),
                                    work=lambda t, v, s, c: Work(tiles=1, bytes_per_tile=1.0, effective={"BLOCK": 64})))
    assert len(ranked(spec, SM90, spec.variants[0], {"M": 1})) == 3


def test_ascend_candidates_come_from_verdict_approved_configs():
    from atlas_kernels.autotune import verdicts
    from atlas_kernels.autotune.candidates import candidates
    t = get_target("Ascend910B2")
    gemm = KERNELS["quant_matmul.gemm"]
    for label in ("i8-nd", "i4-n", "sparse"):
        v = gemm.variant(label)
        cands = candidates(gemm, t, v, {"m": 1024, "k": 4096, "n": 4096})
        assert len(cands) > 1
        assert all((verdicts.verdict(gemm.name, label, c, t) or {}).get("ok") for c in cands[1:])


def test_dry_run_jobs_cover_the_shape_candidates_only():
    gemm = KERNELS["quant_matmul.gemm"]
    shape = tune.parse_shapes("m=16,k=64,n=64")
    jobs = tune.dry_run_jobs([gemm], "sm_90", shape)
    labels = {j.variant.label for j in jobs}
    assert labels and all(lbl.endswith("-decode") for lbl in labels)  # m <= 16 launches take the decode configs
    assert len(jobs) <= 10 * len(labels)
    full = tune.dry_run_jobs([gemm], "sm_90", shape, full_space=True)
    assert len(full) > 10 * len(jobs)


def test_budget_holds_within_ten_percent(tmp_path, monkeypatch, capsys):
    import time

    import atlas_kernels.autotune.__main__ as main_module
    _register_test_spec()

    def timer(fn):
        fn()
        time.sleep(0.05)
        return 1.0
    monkeypatch.setattr(main_module, "timing_refusal", lambda device: None)
    monkeypatch.setattr(tune, "do_bench_median", timer)
    start = time.monotonic()
    assert cli(["tune", "--op", "test.fake", "--shapes", "M=1|2|4|8|16|32|64|128", "--budget", "0.5",
                "--store", str(tmp_path / "out")]) == 0
    elapsed = time.monotonic() - start
    assert elapsed <= 0.55, f"--budget 0.5 took {elapsed:.2f}s"
    out = capsys.readouterr().out
    assert "cut short by --budget" in out or "not written" in out   # 8 groups x 4 configs x 50 ms do not fit


@pytest.mark.parametrize("kernel, variant, shape", [
    ("quant_matmul.gemm", "i8-nd-decode", {"m": 5, "k": 64, "n": 64}),
    ("quant_matmul.gemm", "sparse", {"m": 20, "k": 64, "n": 128}),
    ("nsa_compress.fwd", "fp16-c16s2p2", {"T": 80, "N": 2, "D": 32}),
    ("nsa_compress.bwd", "bf16-c16s2p2", {"T": 80, "N": 2, "D": 32}),
    ("nsa_compress.dw_reduce", "fp16", {"T": 80, "N": 2, "D": 32}),
    ("dequant_rope_quant_kvcache.fused", "int32-d64", {"T": 3, "NQ": 2, "NKV": 1}),
])
def test_new_harnesses_run_their_candidates_with_identical_output(kernel, variant, shape):
    from atlas_kernels.autotune.candidates import candidates
    spec = KERNELS[kernel]
    v, target = spec.variant(variant), get_target("Ascend910B2")
    assert spec.tuning.covers(v, shape)
    with kernel_ran(kernel):
        result = tune.measure(spec, v, shape, torch.device("cpu"), target, timer=lambda fn: 1.0)
    assert result.complete and len(result.times) == len(candidates(spec, target, v, shape)) >= 2
    assert [note for _, _, note in result.times if note] == []
