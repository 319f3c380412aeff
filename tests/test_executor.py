"""Executors (autotune/executor.py, executor_ray.py, runs.py) on CPU workers: the tuner and the compile checks
past one process, runs that survive configs which exit, hang or raise, the journal and --resume.

Workers are real processes (local) or Ray actors; the kernel they time is kernel-less (executor_fake.py) or
runs in the interpreter, and ATLAS_TUNE_TIMER makes the times a function of the config, so every executor
must write the same store.
"""
import json
import os
import subprocess
import sys

import pytest

import executor_fake
from atlas_kernels.autotune import store
from atlas_kernels.autotune.__main__ import main as tune_cli
from atlas_kernels.autotune.executor import (ExecutorError, Journal, LocalExecutor, Options, Outcome, Task,
                                             cpu_slots)
from atlas_kernels.autotune.runs import config_hash_ms

ECHO = "executor_fake:echo"
# three bad configs, none of them the winner (BLOCK=512 under the test timer; BLOCK=16 computes wrong values)
FAULTS = "exit:M=5 BLOCK=128;hang:M=100 BLOCK=256;raise:BLOCK=32"
TIMEOUT = "8"


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv(store.ENV_DIR, str(tmp_path / "user"))  # lookups never see the user's store
    monkeypatch.setenv("ATLAS_TUNE_TIMER", "config-hash")
    monkeypatch.setenv("ATLAS_EXECUTOR_PRELOAD", "executor_fake")
    store.invalidate()
    yield
    store.invalidate()


def _tune(tmp_path, name, *extra):
    return tune_cli(["tune", "--op", executor_fake.NAME, "--shapes", "M=5|100", "--store", str(tmp_path / name),
                     *extra])


def _store(tmp_path, name) -> dict:
    return {e.key: (e.config, e.provenance["median_ms"]) for e in store.read(tmp_path / name / "interpreter.json")}


def _timed(tmp_path, name) -> list:
    return sorted(e.provenance["configs"] for e in store.read(tmp_path / name / "interpreter.json"))


def _journal(tmp_path, name) -> list:
    return [json.loads(line) for line in (tmp_path / name / "interpreter.journal.jsonl").read_text().splitlines()]


def test_the_test_timer_makes_block_512_the_winner():
    times = {b: config_hash_ms({"BLOCK": b}) for b in executor_fake.BLOCKS}
    assert min(times, key=times.get) == 512 and times[512] < min(t for b, t in times.items() if b != 512)


def _check_faulty_run(tmp_path, name, out, executor_word):
    assert "wrote 2 entries" in out, out
    assert _store(tmp_path, name) == _store(tmp_path, "inline"), "the store must hold the same winners"
    assert _timed(tmp_path, "inline") == [5, 5] and _timed(tmp_path, name) == [3, 3]  # 6 less the wrong, less faults
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 6, out  # exit at M=5, hang at M=100, raise at both; the wrong BLOCK=16 at both
    assert sum("BLOCK=16: output differs from the default config's" in f for f in failed) == 2
    assert any("M=5 BLOCK=128: crashed:" in f for f in failed), failed
    assert any(f"M=100 BLOCK=256: timeout: no answer within {TIMEOUT}s; {executor_word} killed" in f for f in failed)
    assert sum("BLOCK=32: error: RuntimeError: injected fault" in f for f in failed) == 2
    assert "6 configs failed" in out and "2 restarts" in out
    recs = _journal(tmp_path, name)
    assert len(recs) == len({r["key"] for r in recs}) == 12  # 2 shapes x 6 configs, each once
    assert sorted(r["status"] for r in recs).count("ok") == 8


def _check_resume(tmp_path, name, monkeypatch, capsys, *args):
    before = _journal(tmp_path, name)
    monkeypatch.setenv("ATLAS_EXECUTOR_FAULTS", "exit:test.exec")  # anything that runs again crashes
    assert _tune(tmp_path, name, *args, "--resume") == 0
    out = capsys.readouterr().out
    assert _journal(tmp_path, name) == before, "--resume ran something again"
    assert "0 restarts" in out and "6 configs failed" in out and _store(tmp_path, name) == _store(tmp_path, "inline")


def test_local_executor_survives_exit_hang_raise_and_resumes(tmp_path, monkeypatch, capsys):
    assert _tune(tmp_path, "inline") == 0
    capsys.readouterr()
    inline = _store(tmp_path, "inline")
    assert {cfg["BLOCK"] for cfg, _ in inline.values()} == {512}
    monkeypatch.setenv("ATLAS_EXECUTOR_FAULTS", FAULTS)
    args = ("--executor", "local", "--devices", "0,1", "--timeout", TIMEOUT)
    assert _tune(tmp_path, "local", *args) == 0
    captured = capsys.readouterr()
    _check_faulty_run(tmp_path, "local", captured.out, "worker")
    assert "worker exited with status 3: injected fault: exit" in captured.out
    assert "executor local: 2 workers" in captured.out
    assert "tune interpreter [" in captured.err and "failed" in captured.err  # the progress bar, with failures
    _check_resume(tmp_path, "local", monkeypatch, capsys, *args)


def test_a_worker_on_another_target_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_EXECUTOR_TARGET", "1=Ascend910B2")
    # 8 x 0.5 s on the one good worker: time enough for the other one's hello to arrive and be refused
    tasks = [Task(str(i), ECHO, {"i": i, "sleep": 0.4}, f"task {i}") for i in range(8)]
    with LocalExecutor(cpu_slots(2), {"target": "interpreter"}, quiet=True) as ex:
        got = list(ex.run(tasks, timeout=30))
        assert [w["slot"] for w in ex.workers] == ["cpu:0"]
        assert ex.refused == [("cpu:1", "target 'Ascend910B2', the job's is 'interpreter'")]
    assert sorted(o.value["payload"]["i"] for o in got) == list(range(8)) and {o.value["index"] for o in got} == {0}
    monkeypatch.setenv("ATLAS_EXECUTOR_TARGET", "0=Ascend910B2")
    with LocalExecutor(cpu_slots(1), {"target": "interpreter"}, quiet=True) as ex:
        with pytest.raises(ExecutorError, match="no usable worker: cpu:0: target 'Ascend910B2'"):
            list(ex.run(tasks[:1], timeout=30))


def test_journal_skips_torn_lines_and_keeps_the_last_run(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append(Outcome(Task("a", ECHO, 1, "A"), "ok", {"ms": 1.0}, worker="w"))
    j.close()
    with open(path, "a") as f:
        f.write('{"key": "b", "sta')  # the driver was killed mid-line
    assert set(Journal(path, resume=True).done) == {"a"}
    Journal(path).close()  # a fresh run keeps the old journal aside
    assert path.read_text() == "" and (tmp_path / "j.jsonl.prev").exists()


def test_ray_is_optional(monkeypatch):
    from atlas_kernels.autotune.runs import make
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ExecutorError, match=r"pip install 'atlas-kernels\[distributed\]'"):
        make(Options("ray"), cpu_slots(1), {})


# ---------------------------------------------------------------- the compile checks on executors

def test_the_tasks_name_functions_that_exist():
    """Workers find their task by name (runs.py), and runs.py calls into kernels/checks by name: moving those
    (ascend.run, cuda.run, ascend_run.run_job, the negative controls) means moving these calls too."""
    from atlas_kernels.autotune import runs
    from atlas_kernels.autotune.worker import resolve
    from atlas_kernels.checks import RETRY_NOTE, ascend, cuda
    from atlas_kernels.checks.ascend_run import run_job
    assert [resolve(fn) for fn in (runs.TIME_FN, runs.CHECK_FN, runs.ASCEND_RUN_FN)] == [
        runs.time_config, runs.check_job, runs.ascend_run_job]
    assert callable(ascend.run) and callable(cuda.run) and callable(run_job) and RETRY_NOTE
    job = runs.job_of({"kernel": "negative_control.ub_fits", "variant": "fp32", "target": "Ascend910B2",
                       "config": {"BLOCK": 1024}, "shipped": True})
    assert job.spec.name == "negative_control.ub_fits" and runs.job_ref(job)["config"] == {"BLOCK": 1024}


CUDA_CHECKS = """
import json, sys
from atlas_kernels.checks import jobs, run_checks
from atlas_kernels.autotune.executor import Options
from atlas_kernels.autotune.runs import check_runner
todo = jobs(["sm_90"], prefix="int4_pack.unpack", sample=0)[:4]
inline = run_checks(todo, "cuda", 1)
local = check_runner(Options("local", timeout=120))(todo, "cuda", 2)
print(json.dumps({"labels": [j.label for j in todo], "inline": inline, "local": local}))
"""


def test_cuda_check_on_local_workers_matches_the_forked_pool_and_survives_a_crash():
    """The cuda compile check, today's forked pool against local workers (in a subprocess: compiling needs real
    JITFunctions, and this process made interpreter ones); one job's worker exits."""
    pytest.importorskip("triton.backends.nvidia", reason="the cuda check needs upstream triton")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "ATLAS_EXECUTOR_PRELOAD")}
    env["ATLAS_EXECUTOR_FAULTS"] = "exit:int4_pack.unpack[int32-nz] sm_90 "
    proc = subprocess.run([sys.executable, "-c", CUDA_CHECKS], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    bad = [i for i, label in enumerate(got["labels"]) if "[int32-nz]" in label]
    assert len(got["labels"]) == 4 and len(bad) == 1, got["labels"]
    assert all(ok for ok, _, _ in got["inline"]), got["inline"]
    assert not got["local"][bad[0]][0] and got["local"][bad[0]][1].startswith("crashed: worker exited with status 3")
    assert [r for i, r in enumerate(got["local"]) if i not in bad] == [r for i, r in enumerate(got["inline"])
                                                                       if i not in bad]
    assert "cuda: 1 worker restarts" in proc.stderr


# ---------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'atlas-kernels[distributed]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_survives_exit_hang_raise_and_resumes(ray_local, tmp_path, monkeypatch, capsys):
    assert _tune(tmp_path, "inline") == 0
    capsys.readouterr()
    monkeypatch.setenv("ATLAS_EXECUTOR_FAULTS", FAULTS)
    args = ("--executor", "ray", "--devices", "0,1", "--timeout", TIMEOUT)
    assert _tune(tmp_path, "ray", *args) == 0
    out = capsys.readouterr().out
    _check_faulty_run(tmp_path, "ray", out, "actor")
    assert "executor ray: 2 workers" in out
    _check_resume(tmp_path, "ray", monkeypatch, capsys, *args)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_interpreter_kernel_on_workers_matches_inline(executor, request, tmp_path, capsys):
    """A real kernel in the interpreter, timed by the test timer: the store is the executor's business only."""
    if executor == "ray":
        request.getfixturevalue("ray_local")
    argv = ["tune", "--op", "int4_pack.nz_to_nd", "--shapes", "B=1,M=8,N=16"]  # 3 variants x 7 configs
    assert tune_cli([*argv, "--store", str(tmp_path / "inline")]) == 0
    assert tune_cli([*argv, "--store", str(tmp_path / "w"), "--executor", executor, "--devices", "0,1"]) == 0
    a, b = (store.read(tmp_path / n / "interpreter.json") for n in ("inline", "w"))
    assert len(a) == 3 and {e.key: e.config for e in a} == {e.key: e.config for e in b}
    assert {e.provenance["configs"] for e in b} == {7}  # every candidate timed, none failed
    assert f"0 configs failed; executor {executor}: 2 workers" in capsys.readouterr().out


@pytest.mark.slow
def test_ray_two_node_cluster_tunes_on_both_nodes(tmp_path, monkeypatch, capsys):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'atlas-kernels[distributed]'")
    from ray.cluster_utils import Cluster
    if ray.is_initialized():  # the module's one-node Ray (ray_local): the executor must attach to the cluster
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        assert _tune(tmp_path, "inline") == 0
        monkeypatch.setenv("ATLAS_EXECUTOR_FAULTS", "slow:test.exec")  # 1 s a config: both actors get some
        args = ("--executor", "ray", "--address", cluster.address, "--devices", "0,1", "--timeout", "60")
        assert _tune(tmp_path, "cluster", *args) == 0
        out = capsys.readouterr().out
        assert _store(tmp_path, "cluster") == _store(tmp_path, "inline")
        nodes = {r["worker"].rsplit("/", 1)[1] for r in _journal(tmp_path, "cluster")}
        assert len(nodes) == 2 and len(cluster.list_all_nodes()) == 2, nodes  # one actor per one-CPU node
    finally:
        cluster.shutdown()
    assert "2 configs failed" in out and "0 restarts" in out  # the two wrong BLOCK=16 only
