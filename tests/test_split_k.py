"""Split-K in quant_matmul's GEMMs and matmul_compress_dequant's (kernels/gemm/split_k.py): bit-identical to the
unsplit launch for every operand format and split count, A8W4 (split at k-groups) included, partials really written
and summed by the reduction launch; the bounded split; the schedule and the modelled decode table; the meter at
m = 1 under the targets' schedules.

Op tests take the ``device`` fixture: inputs are built on the host, launched on ``device`` (the interpreter on CPU,
else the GPU/NPU) and compared on the host. The traffic meter counts the interpreter's loads and stores: its
assertions run on the CPU run only."""
import collections
import contextlib
import pathlib
import sys

import numpy as np
import pytest
import torch

import atlas_kernels as ak
from atlas_kernels import _backend
from atlas_kernels.gemm import split_k as _split_k
from atlas_kernels.gemm.dispatch import gemm_schedule, launched_variant
from atlas_kernels.autotune import get_target, override_config, pick_config
from atlas_kernels.reference import int4_pack as ref_pack
from atlas_kernels.reference import quant_matmul as ref
from atlas_kernels.testing import assert_equal, kernel_ran
from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes

KERNEL = "quant_matmul.gemm"
A8W4 = "quant_matmul.gemm_a8w4"
REDUCE = "quant_matmul.gemm_reduce"
I64, F32, BF16, F16, I32, I8 = torch.int64, torch.float32, torch.bfloat16, torch.float16, torch.int32, torch.int8
TILE = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 8}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def int8(*shape, seed=0):
    return torch.randint(-128, 128, shape, dtype=I8, generator=gen(seed))


def scale64(n, seed=1):
    return ak.trans_quant_param(torch.rand(n, generator=gen(seed)) * 1e-3 + 1e-4)


def on(device, *tensors):
    """The tensors on ``device`` (None stays None)."""
    return tuple(None if t is None else t.to(device) for t in tensors)


# Each maker builds its operands on the host, moves them to ``device`` and returns the call.
def _int8_fp16(device):
    x1, x2 = int8(3, 700), int8(700, 40, seed=1)
    bias = torch.randint(-1000, 1000, (40,), dtype=I32, generator=gen(2))
    x1, x2, scale, bias = on(device, x1, x2, scale64(40), bias)
    return lambda: ak.quant_matmul(x1, x2, scale, bias=bias, output_dtype=F16)


def _int8_requant_transposed_x2(device):
    x1, w = int8(5, 520), int8(33, 520, seed=3)
    offset = torch.randn(33, generator=gen(4)) * 20
    scale = torch.rand(33, generator=gen(5)) * 2e-3 + 1e-4
    x1, w, scale, offset = on(device, x1, w, scale, offset)
    return lambda: ak.quant_matmul(x1, w.t(), scale, offset=offset)


def _int8_int32_out_batched(device):
    # (1, 3) batches of one tile: fewer than the interpreter's 4 cores, so it splits (tiles >= cores never do)
    x1, x2, scale = on(device, int8(1, 3, 4, 300), int8(3, 300, 32, seed=6), torch.ones(1))
    return lambda: ak.quant_matmul(x1, x2, scale, output_dtype=I32)


def _int8_bf16_pertoken(device):
    x1, x2 = int8(7, 450), int8(450, 64, seed=7)
    pertoken = torch.rand(7, generator=gen(8))
    x1, x2, scale, pertoken = on(device, x1, x2, torch.rand(64, generator=gen(9)).to(BF16), pertoken)
    return lambda: ak.quant_matmul(x1, x2, scale, pertoken_scale=pertoken, output_dtype=BF16)


def _int8_nz(device):
    x1, w, scale = on(device, int8(4, 600), int8(600, 40, seed=10), scale64(40))
    nz = ak.nd_to_nz(w)
    return lambda: ak.quant_matmul(x1, nz, scale, output_dtype=F16, x2_layout="nz", x2_shape=(600, 40))


def _int4(transposed):
    def make(device):
        a = torch.randint(-8, 8, (4, 1024), dtype=I32, generator=gen(11))
        b = torch.randint(-8, 8, (1024, 32), dtype=I32, generator=gen(12))
        x2 = ref_pack.pack_int4(b.t().contiguous()).t() if transposed else ref_pack.pack_int4(b)
        x1, x2, scale = on(device, ref_pack.pack_int4(a), x2, scale64(32))  # .to keeps the (k/8, n) view's strides
        return lambda: ak.quant_matmul(x1, x2, scale, output_dtype=F16)
    return make


CALLS = {"int8-fp16": (_int8_fp16, TILE), "int8-requant-x2t": (_int8_requant_transposed_x2, TILE),
         "int8-int32-batched": (_int8_int32_out_batched, TILE), "int8-bf16-pertoken": (_int8_bf16_pertoken, TILE),
         "int8-nz": (_int8_nz, TILE),
         "int4-n": (_int4(False), {**TILE, "BLOCK_K": 256}), "int4-k": (_int4(True), {**TILE, "BLOCK_K": 256})}


def metered(device):
    """A TrafficMeter in the interpreter; natively a null context that yields None (no byte counts there)."""
    return TrafficMeter() if device.type == "cpu" else contextlib.nullcontext()


@contextlib.contextmanager
def reductions():
    """Yields a list that holds, after the block, how many split-K reductions launched inside it."""
    before = _backend.launches[REDUCE]
    count = []
    yield count
    count.append(_backend.launches[REDUCE] - before)


def launch(call, config, split, device, kernel=KERNEL):
    """(output on the host, the meter or None natively) of ``call`` launched with ``split`` K-splits; a split
    launch must be followed by one reduction, an unsplit one by none."""
    with override_config(kernel, {**config, "SPLIT_K": split}), kernel_ran(kernel), metered(device) as meter, \
            reductions() as reduced:
        out = call()
    assert reduced == [int(split > 1)], f"{reduced[0]} reductions for SPLIT_K = {split}"
    return out.cpu(), meter


@pytest.mark.parametrize("split", [2, 3, 7])
@pytest.mark.parametrize("name", list(CALLS))
def test_split_bit_identical_to_unsplit(device, name, split):
    make, config = CALLS[name]
    call = make(device)
    unsplit, plain = launch(call, config, 1, device)
    out, meter = launch(call, config, split, device)
    assert out.dtype == unsplit.dtype and torch.equal(out, unsplit), "split and unsplit outputs differ"
    if meter is not None:  # the interpreter
        assert plain.stored == unsplit.numel() * unsplit.element_size(), "unsplit: only the output is written"
        assert meter.stored > plain.stored, "the split launch must write int32 partials"


def test_split_matches_reference_int8_requant(device):
    """The split result is right, not only equal to the unsplit one (int8 output: bit for bit)."""
    x1, x2 = int8(6, 900), int8(900, 48, seed=13)
    scale = ak.trans_quant_param(torch.rand(48, generator=gen(14)) * 2e-3, torch.randn(48, generator=gen(15)) * 9)
    d_x1, d_x2, d_scale = on(device, x1, x2, scale)
    out, meter = launch(lambda: ak.quant_matmul(d_x1, d_x2, d_scale), TILE, 4, device)
    assert torch.equal(out, ref.quant_matmul(x1, x2, scale))
    if meter is not None:  # the interpreter
        assert meter.stored > out.numel()


@pytest.mark.parametrize("split", [2, 5])
def test_compressed_split_bit_identical(device, split):
    w = ak.pseudo_sparsify(int8(200, 640, seed=16), 0.5)
    x2, idx, info = ak.compress_weight(w)  # the host codec; compress_info stays a host tensor
    x1 = int8(3, 640, seed=17)
    bias = torch.randint(-500, 500, (200,), dtype=I32, generator=gen(18))
    deq = (torch.rand(1, 200, generator=gen(19)) * 1e-3).view(I32).to(I64)
    x1, x2, idx, bias, deq = on(device, x1, x2, idx, bias, deq)
    config = {"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}
    call = lambda: ak.matmul_compress_dequant(x1, x2, idx, bias, deq, compress_info=info)  # noqa: E731
    unsplit, _ = launch(call, config, 1, device)
    out, meter = launch(call, config, split, device)
    assert torch.equal(out, unsplit)
    if meter is not None:  # the interpreter
        assert meter.stored > out.numel() * 2


def test_auto_split_when_tiles_are_fewer_than_cores(device):
    """No SPLIT_K in the config: the device's cores (the interpreter's 4 'cores' on CPU) and one output tile -> the
    launcher splits (the partials it writes: metered on the CPU run)."""
    x1, x2 = int8(2, 1024), int8(1024, 32, seed=20)
    assert _split_k.plan(TILE, 2, 32, 1024, 1, _backend.target_for(device).programs(True))[1] > 1
    with override_config(KERNEL, TILE), kernel_ran(KERNEL, REDUCE), metered(device) as meter:
        out = ak.quant_matmul(*on(device, x1, x2, torch.ones(1)), output_dtype=I32).cpu()
    if meter is not None:  # the interpreter
        assert meter.stored > out.numel() * 4
    assert torch.equal(out, x1.int() @ x2.int())


@pytest.mark.host  # the schedule's arithmetic: no launch
def test_schedule():
    assert _split_k.steps_per_split(11, 7) == (2, 6), "7 splits of 11 units: 6 non-empty ones of 2"
    assert _split_k.cores_busy(24, 64, 1, 24) == 1.0
    assert _split_k.cores_busy(16, 64, 1, 24) == pytest.approx(16 / 24)
    assert _split_k.cores_busy(4, 64, 6, 24) == pytest.approx(256 / (24 * 11))  # 4 tiles x (11 x 5 + 9) units
    assert _split_k.choose(48, 64, 24) == 1
    assert _split_k.plan({**TILE, "SPLIT_K": 3}, 1, 32, 640, 1, 132)[1:] == (3, 256)
    assert _split_k.plan({**TILE, "SPLIT_K": 3}, 1, 32, 7168, 1, 132, group_k=1024)[1:] == (3, 3072), "whole groups"


@pytest.mark.host  # the schedule's arithmetic: no launch
def test_stored_split_applies_only_while_tiles_are_fewer_than_cores():
    """A store key has no batch: SPLIT_K = 8 stored for a decode shape must not split 64 batches x 16 n-tiles
    (the issue's case: a 134 MB workspace and 8x the partial traffic), nor any launch whose tiles fill the cores
    (the chooser decides there); no launch's workspace exceeds MAX_WORKSPACE_BYTES."""
    wide = {"BLOCK_M": 16, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8, "SPLIT_K": 8}
    assert _split_k.plan(wide, 1, 4096, 4096, 64, 24) == (1024, 1, 4096)
    assert _split_k.plan(wide, 16, 4096, 4096, 64, 24)[1] == 1
    assert _split_k.plan(wide, 1, 4096, 4096, 1, 24)[1] == 8, "16 tiles on 24 cores: the stored split applies"
    assert _split_k.plan(wide, 1, 6144, 4096, 1, 24)[1] == 1, "24 tiles on 24 cores: the chooser's 1"
    # 32 tiles on 24 cores: 67% busy; 2 splits: 64 items of 32 units, 16 cores take 3 -> 2048 / 2304 = 0.89
    assert _split_k.plan(wide, 1, 8192, 4096, 1, 24)[1] == 3, "the chooser splits where the tiles fill the cores badly"
    assert _split_k.plan({**wide, "SPLIT_K": 64}, 1, 256, 4096, 1, 24)[1] == _split_k.MAX_SPLIT_K
    assert _split_k.workspace_slots(8, 4096) == 8 and _split_k.workspace_slots(3, 8192, 256) == 32
    huge = {"BLOCK_M": 16, "BLOCK_N": 65536, "BLOCK_K": 128, "GROUP_M": 8}  # 1 tile, 64 MiB of 2-way partials
    assert _split_k.plan({**huge, "SPLIT_K": 2}, 16, 2**19, 256, 1, 24)[1] == 1


# (tiles, K units, cores) -> the fewest splits with >= 90% of the cores busy, worked out by hand (busy = all units /
# (cores x the busiest program's units), items i = tile * splits + s dealt round robin). Mutations caught: a chooser
# that is not the fewest (or ignores the threshold), a model that assumes perfect balance or drops the short split.
CHOICES = [
    (16, 64, 24, 3),    # 1 and 2 splits: 16/24 busy; 3 (22, 22, 20 units): 48 items, 2 per core, max 44 -> 1024/1056
    (32, 64, 132, 4),   # 3: 96 items of <= 22 -> 2048/2904 = 0.71; 4: 128 items of 16 -> 2048/2112 = 0.97
    (8, 64, 132, 16),   # 13 splits of <= 5 units: 512/660 = 0.78 (14, 15 are 13 again); 16 of 4: 512/528 = 0.97
    (4, 224, 24, 6),    # 5 splits of 45: 896/1080 = 0.83; 6 of 38 (last 34): 24 items, max 38 -> 896/912 = 0.98
    (40, 128, 24, 3),   # 1 or 2: a core gets 256 units -> 0.83; 3 (43, 43, 42): 5 items of one split each -> 0.99
    (48, 64, 24, 1),    # 2 tiles per core: all busy without splitting
]


@pytest.mark.parametrize("tiles, units, cores, want", CHOICES)
@pytest.mark.host  # the schedule's arithmetic: no launch
def test_choose_fewest_splits_with_90_percent_busy(tiles, units, cores, want):
    assert _split_k.choose(tiles, units, cores) == want


def _weight_bytes_per_program(monkeypatch, weight):
    """Bytes of ``weight`` each program of the interpreted grid loads (masked-in elements)."""
    from triton.runtime import interpreter as interp
    lo, hi = weight.data_ptr(), weight.data_ptr() + weight.numel() * weight.element_size()
    per_program = collections.Counter()
    orig = interp.InterpreterBuilder.create_masked_load

    def create_masked_load(builder, ptrs, mask, other, cache_policy, is_volatile):
        addr = ptrs.data.astype(np.int64)
        hit = np.broadcast_to(mask.data, addr.shape) & (addr >= lo) & (addr < hi)
        per_program[builder.grid_idx[0]] += int(hit.sum()) * weight.element_size()
        return orig(builder, ptrs, mask, other, cache_policy, is_volatile)

    monkeypatch.setattr(interp.InterpreterBuilder, "create_masked_load", create_masked_load)
    return per_program


@pytest.mark.interpreter("counts each program's weight loads through the interpreter's hooks")
@pytest.mark.parametrize("target", ["Ascend910B2", "sm_90"])
def test_kernel_keeps_the_cores_busy_as_modelled(monkeypatch, target):
    """Llama-3-8B's k/v projection (k 4096, n 1024) at m = 1 launched as on ``target``: the weight bytes each program
    of the persistent grid actually loads give the cores_busy the schedule models, and that is >= 90% (the decode
    bar, measured on the kernel's own dealing of work items rather than asserted of the model). Mutations caught:
    the kernel dealing items in contiguous blocks (or the model assuming round robin wrongly), a split range read
    twice or skipped, the launcher not splitting (4 tiles on 24 / 132 cores: <= 17% busy)."""
    t = get_target(target)
    monkeypatch.setattr(_backend, "target_for", lambda device: t)
    k, n = 4096, 1024
    x1, x2 = int8(1, k, seed=21), int8(k, n, seed=22)
    per_program = _weight_bytes_per_program(monkeypatch, x2)
    with kernel_ran(KERNEL):
        out = ak.quant_matmul(x1, x2, torch.ones(1), output_dtype=I32)
    assert torch.equal(out, x1.int() @ x2.int())
    assert sum(per_program.values()) == k * n, "every weight byte read once"
    cores = t.programs(True)
    tiles, splits, _ = _split_k.plan(pick_config(KERNEL, t, "i8-nd-decode"), 1, n, k, 1, cores)
    measured = k * n / (cores * max(per_program.values()))
    assert measured == pytest.approx(_split_k.cores_busy(tiles, k // _split_k.K_UNIT, splits, cores))
    assert measured >= 0.9, (tiles, splits, cores, dict(per_program))


def _bench_cases():
    bench = str(pathlib.Path(__file__).resolve().parents[1] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import harness
    return harness, harness.load_cases(["quant_matmul", "compress_matmul"])


@pytest.mark.host  # bench's modelled table: no launch
def test_modelled_table_covers_the_decode_cases():
    """bench/run.py --modelled: a row per decode case of a real model and target, with a schedule and bytes."""
    harness, cases = _bench_cases()
    decode = [c for c in cases if c.shape.startswith(("Llama-3-8B", "Qwen2.5-7B", "Llama-3-70B"))]
    assert len(decode) == 2 * 12 * 3 + 12 * 3
    rows = harness.modelled_rows(decode)
    assert len(rows) == 3 * len(decode)
    assert {r["target"] for r in rows} == {"Ascend910B2", "Ascend910B4", "sm_90"}
    for r in rows:
        assert r["modelled_us"] > 0 and r["bytes"] > 0 and r["tiles"] >= 1


@pytest.mark.interpreter("the traffic meter, and a foreign target's schedule launched in the interpreter")
@pytest.mark.parametrize("target", ["Ascend910B2", "Ascend910B4"])
def test_meter_m1_narrowest_llama_layer_under_target_schedule(monkeypatch, target):
    """Llama-3-8B's k/v projection (k 4096, n 1024) at m = 1, launched as on ``target`` (its config and split, in
    the interpreter): bytes moved, partials included, <= 1.10x the minimum."""
    t = get_target(target)
    monkeypatch.setattr(_backend, "target_for", lambda device: t)
    k, n = 4096, 1024
    x1, x2 = int8(1, k, seed=21), int8(k, n, seed=22)
    scale, bias = scale64(n), torch.randint(-1000, 1000, (n,), dtype=I32, generator=gen(23))
    with kernel_ran(KERNEL), TrafficMeter() as meter:
        out = ak.quant_matmul(x1, x2, scale, bias=bias, output_dtype=F16)
    assert meter.stored > out.numel() * 2, "this shape splits on every target"
    assert meter.total <= 1.10 * minimum_bytes([x1, x2, scale, bias], out), meter.total
    config = pick_config(KERNEL, t, "i8-nd-decode")  # the modelled table's bytes are the kernel's, to the byte
    assert meter.total == gemm_schedule(launched_variant("i8-nd", 1), 1, n, k, 1, config, t, 1, k * n, 2, 12)["bytes"]
    assert_equal(out, ref.quant_matmul(x1, x2, scale, bias=bias, output_dtype=F16))


def test_prefill_never_splits(device):
    """m > 16 launches a variant without the split path: a SPLIT_K in the config is ignored (no reduction; the
    meter shows no partials written: on the CPU run)."""
    x1, x2 = int8(17, 1024), int8(1024, 32, seed=24)
    d_x1, d_x2, d_one = on(device, x1, x2, torch.ones(1))
    with override_config(KERNEL, {**TILE, "SPLIT_K": 4}), kernel_ran(KERNEL), metered(device) as meter, \
            reductions() as reduced:
        out = ak.quant_matmul(d_x1, d_x2, d_one, output_dtype=I32).cpu()
    assert reduced == [0]
    if meter is not None:  # the interpreter
        assert meter.stored == out.numel() * 4
    assert torch.equal(out, x1.int() @ x2.int())


def test_batched_decode_that_fills_the_cores_ignores_a_stored_split(device):
    """The interpreter's 4 'cores' (the device's otherwise): 8 batches of one tile each fill them, so SPLIT_K = 4 in
    the config is not applied (no reduction); one batch splits."""
    cores = _backend.target_for(device).programs(True)
    x1, x2 = int8(2 * cores, 1, 256), int8(256, 32, seed=25)
    d_x1, d_x2, d_one = on(device, x1, x2, torch.ones(1))
    with override_config(KERNEL, {**TILE, "SPLIT_K": 4}), kernel_ran(KERNEL), reductions() as reduced:
        out = ak.quant_matmul(d_x1, d_x2, d_one, output_dtype=I32).cpu()
    assert reduced == [0]
    assert torch.equal(out, x1.int() @ x2.int())


def _a8w4_call(device, m, k, n, g, seed=30):
    x1 = int8(m, k, seed=seed)
    x2 = ref_pack.pack_int4(torch.randint(-8, 8, (k, n), dtype=I32, generator=gen(seed + 1)))
    scale = ak.trans_quant_param(torch.rand(k // g * n, generator=gen(seed + 2)) * 1e-3 + 1e-5).reshape(k // g, n)
    offset, pertoken = torch.randn(n, generator=gen(seed + 3)), torch.rand(m, 1, generator=gen(seed + 4)) + 0.5
    x1, x2, scale, offset, pertoken = on(device, x1, x2, scale, offset, pertoken)
    return lambda: ak.npu_quant_matmul(x1, x2, scale, offset=offset, pertoken_scale=pertoken, bias=None,
                                       output_dtype=F16, group_sizes=[0, 0, g])


@pytest.mark.parametrize("m, k, n, g, split", [(1, 2048, 64, 256, 2), (3, 2048, 64, 256, 3), (2, 2048, 96, 256, 8),
                                               (5, 1024, 64, 64, 5), (16, 1024, 32, 128, 8)])
def test_a8w4_split_bit_identical_to_unsplit(device, m, k, n, g, split):
    """A8W4 splits at whole k-groups and the reduction scales and adds the groups' int32 sums in group order, as
    the unsplit kernel does: float outputs equal bit for bit (a reduction that summed per-split float partials
    would round differently). Mutations caught: a split not at a group boundary, groups added out of order."""
    call = _a8w4_call(device, m, k, n, g)
    config = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 8}
    unsplit, plain = launch(call, config, 1, device, A8W4)
    out, meter = launch(call, config, split, device, A8W4)
    assert torch.equal(out, unsplit), "split and unsplit A8W4 outputs differ"
    if meter is not None:  # the interpreter: one int32 slot per k-group
        assert meter.stored == plain.stored + (k // g) * m * n * 4


@pytest.mark.host  # the schedule's arithmetic: no launch
@pytest.mark.parametrize("target", ["Ascend910B2", "Ascend910B4", "sm_90"])
def test_a8w4_decode_splits_to_keep_the_cores_busy(target):
    """torch_npu's A8W4 decode call (m 1, k 8192, n 1024, g 256) on its target's config: >= 90% cores busy
    (modelled), split at k-groups, and the reduction priced (its bytes in the schedule)."""
    t = get_target(target)
    config = pick_config(A8W4, t, "a8w4-decode")
    sched = gemm_schedule(launched_variant("a8w4", 1), 1, 1024, 8192, 1, config, t, 1, 8192 * 1024 // 2, 2,
                          8 * 32 + 4, group_k=256)
    assert sched["split_k"] > 1 and sched["cores_busy"] >= 0.9, sched
    assert sched["reduce_bytes"] == 32 * 1024 * 4 + 1024 * 2 + (8 * 32 + 4) * 1024


@pytest.mark.host  # the shipped verdicts: no launch
def test_every_decode_config_on_ascend_compiles_split_too():
    """A split launch takes its decode variant's config: each config of a decode variant's Ascend space (bishengir's
    verdicts) must also be in its split variant's, or a split launch could take a config that does not compile."""
    t = get_target("Ascend910B2")
    for spec in (ak.gemm.GEMM, ak.gemm.GEMM_A8W4):
        for split in (v for v in spec.variants if v.split):
            decode = next(v for v in spec.variants if v.operands == split.operands and v.decode and not v.split)
            plain = [{k: c for k, c in cfg.items() if k != "SPLIT_K"} for cfg in spec.space(t, decode)]
            missing = [c for c in plain if c not in spec.space(t, split)]
            assert plain and not missing, (split.label, missing)


def test_split_launch_compiles_one_kernel_per_format(monkeypatch, device):
    """A split launch runs no epilogue, so two calls that differ only in their epilogue (fp16 with an int64 scale
    and bias; int8 with a float scale and offset) launch the split GEMM with the same constexprs and pointer dtypes
    (one compile), and their reductions with their own epilogues."""
    seen = []
    launch = _backend.launch

    def record(name, kernel, grid, *args, **kwargs):
        seen.append((name, {k: v.dtype if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
                            if k.isupper() or k.endswith("_ptr")}))
        return launch(name, kernel, grid, *args, **kwargs)
    monkeypatch.setattr(_backend, "launch", record)
    x1, x2 = int8(2, 512), int8(512, 32, seed=26)
    d_x1, d_x2, d_s64, d_s32, d_off = on(device, x1, x2, scale64(32), torch.rand(32) * 1e-3, torch.randn(32))
    with override_config(KERNEL, {**TILE, "SPLIT_K": 2}), kernel_ran(KERNEL, REDUCE):
        ak.quant_matmul(d_x1, d_x2, d_s64, output_dtype=F16)
        ak.quant_matmul(d_x1, d_x2, d_s32, offset=d_off)
    gemms = [kw for name, kw in seen if name == KERNEL]
    reductions = [kw for name, kw in seen if name == REDUCE]
    assert len(gemms) == 2 and gemms[0] == gemms[1] and gemms[0]["SPLIT"] is True
    assert len(reductions) == 2 and reductions[0]["out_ptr"] == F16 and reductions[1]["out_ptr"] == I8
    assert reductions[1]["REQUANT"] and not reductions[0]["REQUANT"]


@pytest.mark.interpreter("launches the jitted kernel directly to reach a constexpr combination no launch makes")
def test_static_assert_refuses_a_float_accumulator_in_the_int32_kernel():
    """A8W4's group scales (a float accumulator) can never reach the int32 kernel and its int32 workspace."""
    from atlas_kernels.gemm.kernel import _qmm_kernel
    from atlas_kernels.gemm.formats import ScaleMode
    from atlas_kernels.gemm.specs import GEMM
    t = torch.zeros(64, dtype=I32)
    args = {**{p: t for p in ("a_ptr", "b_ptr", "out_ptr", "scale_ptr", "offset_ptr", "pertoken_ptr", "bias_ptr",
                              "bv_ptr", "bo_ptr", "ws_ptr")},
            **{n: 1 for n in GEMM.variant("i8-nd").types if not n.endswith("_ptr")},
            **GEMM.variant("i8-nd").constexprs, "SCALE_MODE": int(ScaleMode.I64_GROUP), **TILE}
    with pytest.raises(Exception, match="group scales"):
        _qmm_kernel[(1,)](**args)
