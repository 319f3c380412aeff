"""The CUDA compile check: launch-like specialization, the shared-memory limit and the wgmma requirement.

Compiling needs the real JITFunction, not the interpreter's (conftest sets TRITON_INTERPRET=1), so every
compile runs in a subprocess without it, as the check itself does.
"""
import json
import os
import subprocess
import sys

from atlas_kernels.autotune import KERNELS, get_target
from atlas_kernels.checks import Job
from atlas_kernels.checks.cuda import LAUNCH, must_use_wgmma

_PRELUDE = ("import json\n"
            "import atlas_kernels\n"
            "from atlas_kernels.checks import Job, cuda\n"
            "from atlas_kernels.autotune import KERNELS, get_target\n"
            "def show(r):\n"
            "    print(json.dumps({'ok': r.ok, 'detail': r.detail, 'stats': r.stats}))\n")


def compile_in_subprocess(code: str) -> list:
    """Run _PRELUDE + code without TRITON_INTERPRET; one JSON object per line it printed."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _PRELUDE + code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_launch_like_compile_of_the_shipped_sm90_i8_nd_gemm_differs_from_the_conservative_one():
    # the attributes must be the ones Triton's own launcher builds for aligned tensors and sizes divisible by 16
    code = ("import torch\n"
            "from triton.compiler import make_backend\n"
            "from triton.backends.compiler import GPUTarget\n"
            "from triton.runtime.jit import create_function_from_signature\n"
            "from atlas_kernels.checks import signature\n"
            "s = KERNELS['quant_matmul.gemm']; t = get_target('sm_90'); v = s.variant('i8-nd')\n"
            "cfg = s.default(t, v)\n"
            "sig, constexprs = signature(s, v, cfg)\n"
            "dt = {'*i8': torch.int8, '*u8': torch.uint8, '*i16': torch.int16, '*i32': torch.int32,\n"
            "      '*i64': torch.int64, '*fp16': torch.float16, '*bf16': torch.bfloat16, '*fp32': torch.float32}\n"
            "args = {n: constexprs[n] if ty == 'constexpr' else torch.empty(64, dtype=dt[ty]) if ty[0] == '*'\n"
            "        else 16 for n, ty in sig.items()}\n"
            "backend = make_backend(GPUTarget('cuda', 90, 32))\n"
            "binder = create_function_from_signature(s.fn.signature, s.fn.params, backend)\n"
            "bound, spec, opts = binder(**args)\n"
            "_, launch_sig, _, launch_attrs = s.fn._pack_args(backend, {}, bound, spec, opts)\n"
            "ours = cuda.launch_attrs(s.fn, sig)\n"
            "print(json.dumps({'same_sig': launch_sig == sig, 'same_attrs': launch_attrs == ours,\n"
            "                  'n_aligned': sum(a == [['tt.divisibility', 16]] for a in ours.values()),\n"
            "                  'n_args': sum(ty != 'constexpr' for ty in sig.values())}))\n"
            "show(cuda.run(Job(s, v, t, cfg, shipped=True)))\n")
    attrs, r = compile_in_subprocess(code)
    assert attrs["same_sig"] and attrs["same_attrs"], attrs
    assert attrs["n_aligned"] == attrs["n_args"], attrs  # every pointer and every i32 argument is specialized
    stats = r["stats"]
    for key in ("regs", "stack", "local", "shared_dyn", "wgmma", "mma", "cp_async"):
        assert key in stats and LAUNCH + key in stats, stats
    # unaligned int8 pointers allow no 16-byte async copies; aligned ones are pipelined with cp.async
    assert stats["cp_async"] == 0 and stats[LAUNCH + "cp_async"] > 0, stats
    assert stats[LAUNCH + "regs"] < stats["regs"], stats
    assert stats[LAUNCH + "shared_dyn"] != stats["shared_dyn"], stats


def test_cuda_check_fails_a_config_over_the_shared_memory_limit():
    # a 256x256 tile of 32-bit words goes through a 256 KiB layout conversion in shared memory (sm_90: 227 KiB);
    # it fails though not shipped (a spill alone would not fail it): such a config can never launch
    code = ("s = KERNELS['int4_pack.nd_to_nz']; t = get_target('sm_90'); v = s.variant('32bit')\n"
            "show(cuda.run(Job(s, v, t, {'BLOCK_M': 256, 'BLOCK_N': 256, 'num_warps': 32}, shipped=False)))\n"
            "show(cuda.run(Job(s, v, t, {'BLOCK_M': 32, 'BLOCK_N': 128, 'num_warps': 4}, shipped=False)))\n")
    huge, small = compile_in_subprocess(code)
    assert not huge["ok"] and "shared memory over sm_90's 232448 bytes" in huge["detail"], huge
    assert huge["stats"]["shared_dyn"] > 232448 and huge["stats"][LAUNCH + "shared_dyn"] > 232448, huge
    assert small["ok"] and small["stats"][LAUNCH + "shared_dyn"] <= 232448, small


def test_cuda_check_requires_wgmma_for_a_shipped_dense_gemm_on_sm90():
    # 16 rows cannot fill a 64-row wgmma warpgroup tile: Triton falls back to mma.sync
    code = ("s = KERNELS['quant_matmul.gemm']; t = get_target('sm_90'); v = s.variant('i8-nd')\n"
            "cfg = {'BLOCK_M': 16, 'BLOCK_N': 128, 'BLOCK_K': 64, 'GROUP_M': 8, 'num_warps': 4, 'num_stages': 2}\n"
            "show(cuda.run(Job(s, v, t, cfg, shipped=True)))\n"
            "show(cuda.run(Job(s, v, t, cfg, shipped=False)))\n")
    shipped, sampled = compile_in_subprocess(code)
    assert not shipped["ok"] and "no wgmma" in shipped["detail"], shipped
    assert shipped["stats"]["wgmma"] == 0 and shipped["stats"]["mma"] > 0, shipped
    assert sampled["ok"], sampled  # the same config, not shipped, has nothing else wrong with it


def test_wgmma_requirement_covers_the_dense_gemm_variants_with_64_row_tiles_on_sm90_only():
    specs = [KERNELS["quant_matmul.gemm"], KERNELS["quant_matmul.gemm_a8w4"]]
    sm90, sm80 = get_target("sm_90"), get_target("sm_80")
    need = [(s.name, v.label) for s in specs for v in s.variants if must_use_wgmma(Job(s, v, sm90, {}, shipped=True))]
    assert len(need) == 22 and not any(label.startswith("sparse") for _, label in need), need
    assert {(s.name, v.label) for s in specs for v in s.variants} - set(need) == {
        *(("quant_matmul.gemm", label) for label in ("sparse", "sparse-decode", "sparse-decode-split", "sparse-int32")),
        ("quant_matmul.gemm_a8w4", "a8w4-decode"), ("quant_matmul.gemm_a8w4", "a8w4-decode-split")}
    assert ("quant_matmul.gemm", "i8-nd-decode-split") in need
    for spec in specs:
        assert not any(must_use_wgmma(Job(spec, v, sm80, {}, shipped=True)) for v in spec.variants)
        assert not any(must_use_wgmma(Job(spec, v, sm90, {}, shipped=False)) for v in spec.variants)
    other = KERNELS["int4_pack.pack"]
    assert not must_use_wgmma(Job(other, other.variants[0], sm90, {}, shipped=True))
