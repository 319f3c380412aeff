"""Ascend config spaces come from bishengir's stored verdicts (autotune/ascend_verdicts.json)."""
import json

import pytest

import atlas_kernels  # noqa: F401  (registers every kernel)
from atlas_kernels.autotune import ASCEND_TARGETS, KERNELS, KernelSpec, Variant, get_target, register_kernel, verdicts

# the variants registered at import; nsa_compress adds other (l, d) geometries on first use, without verdicts
# (kernel-less specs that other test modules register, named test.*, are not shipped)
REGISTERED = {name: list(spec.variants) for name, spec in KERNELS.items() if not name.startswith("test.")}


def test_ascend_space_keeps_exactly_the_candidates_that_compiled(monkeypatch):
    """A toy kernel with four candidates and hand-written verdicts: the Ascend space is the two that compiled, in
    candidate order; no verdict counts as not compiled; verdicts for other on-chip sizes count for nothing; CUDA
    spaces ignore verdicts. Mutations caught: keeping failed or unjudged candidates, ignoring the memory class,
    filtering non-Ascend targets, reordering the space."""
    candidates = [{"B": 1}, {"B": 2}, {"B": 3}, {"B": 4}]
    spec = KernelSpec(name="test_verdicts.toy", fn=object(), variants=[Variant("v", {})],
                      space=lambda target, variant: list(candidates), default=lambda target, variant: candidates[0])
    register_kernel(spec)
    del KERNELS[spec.name]  # the spec works on its own; other tests iterate over the registry
    a2, v = get_target("Ascend910B2"), spec.variants[0]
    stored = {verdicts.config_key({"B": 1}): {"ok": True, "ub": 1000},
              verdicts.config_key({"B": 2}): {"ok": False, "error": "ub overflow"},
              verdicts.config_key({"B": 4}): {"ok": True, "ub": 2000}}      # B=3: never judged
    data = {"schema": verdicts.SCHEMA, "memory": verdicts.memory_class(a2), "kernels": {spec.name: {"v": stored}}}
    monkeypatch.setattr(verdicts, "load", lambda path=verdicts.PATH: data)
    assert spec.space(a2, v) == [{"B": 1}, {"B": 4}]
    assert spec.space(get_target("Ascend910_9391"), v) == [{"B": 1}, {"B": 4}]  # same on-chip sizes
    assert spec.space(get_target("sm_90"), v) == candidates
    data["memory"] = "ub1-l11-l0a1-l0b1-l0c1"                                   # made for other on-chip sizes
    assert spec.space(a2, v) == []


def test_every_shipped_ascend_space_was_judged_by_bishengir():
    """The shipped verdict file covers every registered kernel: each candidate judged, each default compiled,
    each config of a space planned within the UB (the stored numbers are bishengir's, not a model's)."""
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
            # a cube-only compile plans no UB at all (int8 split launches: the cube stores the partials)
            least = 0 if spec.uses_dot else 1
            assert all(least <= stored[verdicts.config_key(c)].get("ub", 0) <= t.ub_bytes for c in space), \
                (name, v.label)
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
