"""Ascend config spaces come from bishengir's stored verdicts (autotune/ascend_verdicts.json)."""
import json

import pytest

import atlas_kernels  # noqa: F401  (registers every kernel)
from atlas_kernels.autotune import ASCEND_TARGETS, KERNELS, get_target, verdicts

# the variants registered at import; nsa_compress adds other (l, d) geometries on first use, without verdicts
REGISTERED = {name: list(spec.variants) for name, spec in KERNELS.items()}


def test_every_ascend_space_is_what_bishengir_compiled():
    t = get_target("Ascend910B2")
    data = verdicts.load()
    assert data["memory"] == verdicts.memory_class(t), "verdicts were made for other on-chip sizes"
    for name, variants in REGISTERED.items():
        spec = KERNELS[name]
        for v in variants:
            stored = data["kernels"].get(name, {}).get(v.label)
            assert stored, f"{name}[{v.label}]: no verdicts; run python -m atlas_kernels.checks ascend --write-verdicts"
            candidates = spec.candidates(t, v)
            assert all(verdicts.config_key(c) in stored for c in candidates), f"{name}[{v.label}]: unjudged candidates"
            space = spec.space(t, v)
            assert space == [c for c in candidates if stored[verdicts.config_key(c)]["ok"]]
            assert all(0 < stored[verdicts.config_key(c)]["ub"] <= t.ub_bytes for c in space), (name, v.label)
            assert spec.default(t, v) in space, f"{name}[{v.label}]: the Ascend default did not compile"


def test_all_a2_a3_socs_share_the_memory_class_the_verdicts_were_made_for():
    classes = {verdicts.memory_class(get_target(n)) for n in ASCEND_TARGETS}
    assert classes == {verdicts.load()["memory"]}


def test_unreadable_verdict_file_warns_and_counts_as_empty(tmp_path):
    bad = tmp_path / "v.json"
    bad.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable Ascend verdict file"):
        assert verdicts.load(bad)["kernels"] == {}
    verdicts.load.cache_clear()


def test_write_merges_variants_atomically(tmp_path):
    path = tmp_path / "v.json"
    t = get_target("Ascend910B2")
    ok = {"ok": True, "ub": 100, "linalg": "a"}
    verdicts.write({"k": {"v1": {'{"B": 1}': ok}}}, t, "test", path)
    verdicts.write({"k": {"v2": {'{"B": 2}': {**ok, "ok": False}}}}, t, "test", path)
    data = json.loads(path.read_text())
    assert set(data["kernels"]["k"]) == {"v1", "v2"} and data["memory"] == verdicts.memory_class(t)
    assert [p.name for p in tmp_path.iterdir()] == ["v.json"]  # no temp file left behind
    verdicts.load.cache_clear()
