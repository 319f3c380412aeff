"""The last bad inputs (issue 23): each one a TypeError/ValueError naming the argument, a StoreWarning, or a
StoreError -- not an AttributeError, an IndexError, a silent fallback or a wrong result. Also: the tuned-config
store is read once per process unless ATLAS_KERNELS_STORE_RELOAD=1, and a flipped byte in a compressed block
raises where the format lets us see it."""
import json
import os
import pathlib

import numpy as np
import pytest
import torch

import atlas_kernels as ak
from atlas_kernels.autotune import get_target, pick_config, store
from atlas_kernels.reference import quant_matmul as ref_qm
from atlas_kernels.testing import kernel_ran

pytestmark = pytest.mark.interpreter("bad-input calls on CPU tensors; the codec and the store are host code")

W = torch.randint(-4, 5, (40, 48), dtype=torch.int8, generator=torch.Generator().manual_seed(1))
X2, INDEX, INFO = ak.compress_weight(W)
BAD = [None, [1, 2], 1.5, "x2", np.zeros(3, np.int8), object()]


# ---------------------------------------------------------------- compressed weights: types and meta tensors
@pytest.mark.parametrize("bad", BAD, ids=lambda b: type(b).__name__)
@pytest.mark.parametrize("arg", ["x2", "compress_index"])
def test_prepare_compressed_weight_names_a_non_tensor(arg, bad):
    args = {"x2": X2, "compress_index": INDEX, arg: bad}
    with pytest.raises(TypeError, match=f"prepare_compressed_weight: {arg} "):
        ak.prepare_compressed_weight(args["x2"], args["compress_index"], INFO)


def test_npu_matmul_compress_dequant_names_x1():
    bias = torch.zeros(40, dtype=torch.int32)
    deq = torch.ones(1, 40, dtype=torch.int64)
    with pytest.raises(TypeError, match="x1 is required"):
        ak.npu_matmul_compress_dequant(None, X2, INDEX, bias, deq)
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor, got list"):
        ak.npu_matmul_compress_dequant([[1]], X2, INDEX, bias, deq)


@pytest.mark.parametrize("call,arg", [
    (lambda: ak.compress_weight(W.to("meta")), "weight"),
    (lambda: ak.decompress_weight(X2.to("meta"), INDEX, INFO), "x2"),
    (lambda: ak.decompress_weight(X2, INDEX.to("meta"), INFO), "compress_index"),
    (lambda: ak.decompress_weight(X2, INDEX, INFO.to("meta")), "compress_info"),
    (lambda: ak.prepare_compressed_weight(X2.to("meta"), INDEX, INFO), "x2"),
    (lambda: ak.prepare_compressed_weight(X2, INDEX.to("meta"), INFO), "compress_index"),
], ids=["compress-weight", "decompress-x2", "decompress-index", "decompress-info", "prepare-x2", "prepare-index"])
def test_meta_tensors_are_named(call, arg):
    with pytest.raises(ValueError, match=f"{arg} is a meta tensor"):
        call()


# ---------------------------------------------------------------- quant_matmul's x2_shape
X1 = torch.randint(-128, 128, (2, 64), dtype=torch.int8, generator=torch.Generator().manual_seed(2))
XW = torch.randint(-128, 128, (64, 40), dtype=torch.int8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("x2_shape", [(999, 999), (64,), (40, 64), (64, 40, 1)])
def test_nd_x2_shape_must_repeat_k_n(x2_shape):
    with pytest.raises(ValueError, match=r"x2_shape must be None or \(64, 40\) for ND x2"):
        ak.quant_matmul(X1, XW, torch.ones(1), output_dtype=torch.int32, x2_shape=x2_shape)


def test_nd_x2_shape_equal_to_k_n_is_accepted():
    with kernel_ran("quant_matmul.gemm"):
        out = ak.quant_matmul(X1, XW, torch.ones(1), output_dtype=torch.int32, x2_shape=(64, 40))
    assert torch.equal(out, X1.int() @ XW.int())


def test_a8w4_x2_shape_is_checked():
    x2 = ak.convert_weight_to_int4pack(torch.randint(-8, 8, (128, 64), dtype=torch.int32))
    scale = ak.trans_quant_param(torch.ones(2, 64) * 1e-2)
    with pytest.raises(ValueError, match=r"x2_shape must be None or \(128, 64\)"):
        ak.quant_matmul(torch.ones(1, 128, dtype=torch.int8), x2, scale, output_dtype=torch.float16,
                        group_sizes=[0, 0, 64], x2_shape=(128, 63))


@pytest.mark.parametrize("x2_shape", [(64,), (64, 40, 1), (64, 0), (64, -8), (64, 65), (32, 40)])
def test_nz_x2_shape_is_validated(x2_shape):
    nz = ak.nd_to_nz(XW)  # (2, 4, 16, 32): n <= 64 in two 32-column fractals
    with pytest.raises(ValueError, match="x2_shape must be"):
        ak.quant_matmul(X1, nz, torch.ones(1), output_dtype=torch.int32, x2_layout="nz", x2_shape=x2_shape)


# ---------------------------------------------------------------- trans_quant_param keeps NaN a NaN
@pytest.mark.parametrize("round_mode", [0, 1])
@pytest.mark.parametrize("bits", [0x7F800001, 0x7F801FFF, 0xFF800001, 0x7FC00000, 0xFFFFFFFF, 0x7FFFFFFF])
def test_trans_quant_param_keeps_nan(bits, round_mode):
    scale = torch.tensor([bits], dtype=torch.int64).to(torch.int32).view(torch.float32)
    decoded, _ = ak.decode_quant_param(ak.trans_quant_param(scale, round_mode=round_mode))
    assert torch.isnan(decoded).all(), f"{bits:#010x} lost its NaN"
    assert torch.signbit(decoded) == torch.signbit(scale)


@pytest.mark.parametrize("round_mode", [0, 1])
def test_trans_quant_param_infinities_and_finite_values_unchanged(round_mode):
    scale = torch.tensor([float("inf"), float("-inf"), 1.0, -0.00123, 3.0e38])
    decoded, _ = ak.decode_quant_param(ak.trans_quant_param(scale, round_mode=round_mode))
    assert torch.equal(decoded[:2], scale[:2])
    assert torch.equal(ak.trans_quant_param(scale, round_mode=round_mode),
                       ref_qm.trans_quant_param(scale, round_mode=round_mode))
    if round_mode == 0:
        assert torch.equal(decoded, ref_qm.truncate_scale(scale))


# ---------------------------------------------------------------- store files that must warn
@pytest.fixture
def user_store(tmp_path, monkeypatch):
    monkeypatch.setenv(store.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(store, "SHIPPED_DIR", tmp_path / "shipped")
    store.invalidate()
    yield tmp_path
    store.invalidate()


ENTRY = {"kernel": "int4_pack.pack", "variant": "int32-nd", "bucket": [], "config": {"BLOCK_R": 8},
         "provenance": {"source": "derived"}}


@pytest.mark.parametrize("data,match", [
    ({"schema": 1, "target": "sm_90", "entries": {"0": ENTRY}}, "'entries' must be a list"),
    ({"schema": 1, "target": "sm_90", "entries": "x"}, "'entries' must be a list"),
    ({"schema": 1, "target": "sm_90", "entries": [{**ENTRY, "bucket": "4096"}]}, "entry 0 ignored: bucket"),
    ({"schema": True, "target": "sm_90", "entries": [ENTRY]}, "has schema True"),
    ({"schema": 1, "target": "sm_80", "entries": [ENTRY]}, "for target 'sm_80', not 'sm_90'; ignoring it$"),
], ids=["entries-object", "entries-string", "bucket-string", "schema-true", "other-target"])
def test_ignored_store_files_warn(user_store, data, match):
    path = user_store / "sm_90.json"
    path.write_text(json.dumps(data))
    with pytest.warns(store.StoreWarning, match=match):
        assert store.read(path) == []


def test_mixed_buckets_merge_and_read_back(user_store):
    entries = [store.Entry("k", "v", ("x", 48), {"B": 1}, {"source": "derived"}),
               store.Entry("k", "v", (3,), {"B": 2}, {"source": "derived"}),
               store.Entry("k", "v", (3, "y"), {"B": 3}, {"source": "derived"})]
    path = store.merge_into(user_store, "sm_90", entries)
    assert {e.key: e for e in store.read(path)} == {e.key: e for e in entries}


def test_merge_into_unwritable_directory_raises(tmp_path, monkeypatch):
    entry = store.Entry("k", "v", (), {"B": 1}, {"source": "derived"})
    real_mkstemp = store.tempfile.mkstemp

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))
    monkeypatch.setattr(store.tempfile, "mkstemp", read_only)  # a read-only directory, even for root
    with pytest.raises(store.StoreError, match="cannot write tuned-config store .*PermissionError"):
        store.merge_into(tmp_path, "sm_90", [entry])
    assert not (tmp_path / "sm_90.json").exists()
    monkeypatch.setattr(store.tempfile, "mkstemp", real_mkstemp)
    assert store.merge_into(tmp_path, "sm_90", [entry]) == tmp_path / "sm_90.json"


@pytest.mark.parametrize("how", ["permission", "directory"])
def test_merge_into_an_unreadable_file_raises_and_keeps_it(tmp_path, monkeypatch, how):
    path = tmp_path / "sm_90.json"
    entry = store.Entry("k", "v", (), {"B": 1}, {"source": "derived"})
    if how == "directory":
        path.mkdir()
    else:
        store.write(path, "sm_90", [store.Entry("old", "v", (), {"B": 1}, {"source": "derived"})])
        real = pathlib.Path.read_bytes

        def unreadable(self):  # a file without read permission, even for root
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)
        monkeypatch.setattr(pathlib.Path, "read_bytes", unreadable)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(store.StoreError, match="cannot read the existing tuned-config store"):
        store.merge_into(tmp_path, "sm_90", [entry])
    assert [f for f in sorted(os.listdir(tmp_path)) if not f.endswith(".lock")] == before  # nothing moved or written
    assert not (tmp_path / "sm_90.json.corrupt").exists()


# ---------------------------------------------------------------- the store is read once per process
SM90 = get_target("sm_90")
A = {"BLOCK_R": 8, "BLOCK_P": 8, "num_warps": 2}
B = {"BLOCK_R": 16, "BLOCK_P": 8, "num_warps": 2}


def _entry(config):
    return store.Entry("int4_pack.pack", "int32-nd", (), config, {"source": "derived"})


def _rewrite_from_another_process(path, config):
    store.write(path, "sm_90", [_entry(config)])
    os.utime(path, ns=(1, 1))


@pytest.mark.parametrize("reload", [None, "0", "1"])
def test_store_read_once_unless_reload_is_asked(user_store, monkeypatch, reload):
    if reload is None:
        monkeypatch.delenv(store.ENV_RELOAD, raising=False)
    else:
        monkeypatch.setenv(store.ENV_RELOAD, reload)
    monkeypatch.setattr(store, "RECHECK_S", 0.0)
    store.merge_into(user_store, "sm_90", [_entry(A)])
    assert pick_config("int4_pack.pack", SM90, "int32-nd") == A
    _rewrite_from_another_process(user_store / "sm_90.json", B)  # a tuner elsewhere; no invalidate() here
    assert pick_config("int4_pack.pack", SM90, "int32-nd") == (B if reload == "1" else A)


def test_store_follows_its_directory_and_own_writes(user_store, monkeypatch, tmp_path_factory):
    monkeypatch.delenv(store.ENV_RELOAD, raising=False)
    store.merge_into(user_store, "sm_90", [_entry(A)])
    assert pick_config("int4_pack.pack", SM90, "int32-nd") == A
    store.merge_into(user_store, "sm_90", [_entry(B)])  # this process's own write: seen at once
    assert pick_config("int4_pack.pack", SM90, "int32-nd") == B
    other = tmp_path_factory.mktemp("other")
    store.write(other / "sm_90.json", "sm_90", [_entry(A)])
    monkeypatch.setenv(store.ENV_DIR, str(other))  # the process points itself elsewhere: seen at once
    assert pick_config("int4_pack.pack", SM90, "int32-nd") == A
