"""The Ray executor: one actor per NPU / GPU (or per core for CPU work) of a Ray cluster.

``pip install atlas-kernels[distributed]``. The driver attaches to a running cluster (``--address``,
e.g. ``auto`` on a node of it) or starts Ray on this machine. Actors ask for ``{"NPU": 1}`` (Ray's name
for an Ascend NPU; it then sets ASCEND_RT_VISIBLE_DEVICES for the actor), one GPU (CUDA_VISIBLE_DEVICES)
or one CPU. Each actor runs the same worker code as a local worker (autotune/worker.py), so timeouts,
crashes, refusals and the journal behave alike; a killed or dead actor is replaced by a new one.
"""
from __future__ import annotations

import os
import sys
import time

from .executor import STARTUP_TIMEOUT_S, STARTUP_TRIES, Executor, ExecutorError, Outcome, refusal, triton_cache_dir

# What the workers must see as the driver does (the interpreter switch, the test hooks, the caches).
FORWARDED = ("TRITON_INTERPRET", "TRITON_DEFAULT_FP_FUSION")
FORWARDED_PREFIX = "ATLAS_"


def forwarded_env() -> dict:
    return {k: v for k, v in os.environ.items() if k in FORWARDED or k.startswith(FORWARDED_PREFIX)}


class _Actor:
    """The Ray actor: the worker's setup, describe and execute, in a Ray worker process."""

    def __init__(self, init: dict):
        os.environ.setdefault("TRITON_CACHE_DIR", triton_cache_dir(init["name"]))
        from .worker import setup
        self.ctx = setup(init)

    def hello(self) -> dict:
        import ray

        from .worker import describe
        return {**describe(self.ctx), "node": ray.get_runtime_context().get_node_id()[:12]}

    def run(self, fn: str, payload, label: str) -> tuple:
        from .worker import execute
        return execute(fn, payload, self.ctx, label)


def _first_line(e: BaseException) -> str:
    """Ray's actor-death errors span many lines; keep the one that says how it died."""
    import re
    m = re.search(r"exit detail: (.*?)(?:\. |$)", str(e), re.M)
    if m:
        return m.group(1)[:200]
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "exit" in ln.lower() or "killed" in ln.lower() or "signal" in ln.lower():
            return ln[:200]
    return (lines[0] if lines else type(e).__name__)[:200]


class RayExecutor(Executor):
    """count actors (None: one per unit of the cluster's resource), each asking ``resources``."""

    name = "ray"

    def __init__(self, count: int | None, requires: dict, resources: dict, address: str | None = None,
                 preload=()):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'atlas-kernels[distributed]'") from None
        self.ray, self.count, self.address = ray, count, address
        self.requires, self.preload, self.kind = requires, tuple(preload), next(iter(resources))
        self.restarts, self.workers, self.refused = 0, [], []
        self.actors, self.state, self.pending = [], [], {}  # pending: ref -> (index, task/None, started, deadline)
        self.started = self.owned = False  # Ray and the actors start when the first task comes

    def _start(self) -> None:
        ray, kind, count = self.ray, self.kind, self.count
        env = forwarded_env()
        self.owned = not ray.is_initialized()  # started (or attached) here: shut down at close
        if self.owned:
            opts = dict(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
            if self.address:
                ray.init(address=self.address, **opts)
            elif kind == "CPU":
                ray.init(num_cpus=count, **opts)
            else:
                ray.init(**opts)
        if count is None:
            count = int(ray.cluster_resources().get(kind, 0))
        if count < 1:
            raise ExecutorError(f"the Ray cluster has no {kind} resource (ray.cluster_resources(): "
                                f"{ray.cluster_resources()})")
        device = {"NPU": "npu:0", "GPU": "cuda:0"}.get(kind, "cpu")
        self.options = ({"num_cpus": 1} if kind == "CPU" else
                        {"num_cpus": 0, "num_gpus": 1} if kind == "GPU" else {"num_cpus": 0, "resources": {kind: 1}})
        self.options["runtime_env"] = {"env_vars": env}
        self.inits = [{"index": i, "device": device, "name": f"ray-{kind.lower()}-{i}", "sys_path": sys.path,
                       "preload": list(self.preload)} for i in range(count)]
        self.cls = ray.remote(_Actor)
        self.actors, self.state, self.tries = [None] * count, ["starting"] * count, [0] * count
        self.started = True
        for i in range(count):
            self._spawn(i)

    def _spawn(self, i: int) -> None:
        actor = self.cls.options(**self.options).remote(self.inits[i])
        self.actors[i], self.state[i] = actor, "starting"
        now = time.monotonic()
        self.pending[actor.hello.remote()] = (i, None, now, now + STARTUP_TIMEOUT_S)

    def _kill(self, i: int) -> None:
        if self.actors[i] is None:
            return
        try:
            self.ray.kill(self.actors[i], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _lost_while_starting(self, i: int, why: str) -> None:
        self.tries[i] += 1
        if self.tries[i] >= STARTUP_TRIES:
            self.state[i] = "dead"
            print(f"executor ray: actor {i} gave up: {why}", file=sys.stderr, flush=True)
        else:
            self._spawn(i)

    def run(self, tasks, timeout: float | None = None):
        ray = self.ray
        tasks, first = iter(tasks), []
        exhausted = False
        if not self.started:
            first = [t for t in [next(tasks, None)] if t is not None]
            if not first:  # nothing to do (a resumed run): start neither Ray nor an actor
                return
            self._start()
        while True:
            for i, actor in enumerate(self.actors):
                if self.state[i] == "idle" and not (exhausted and not first):
                    task = first.pop() if first else next(tasks, None)
                    if task is None:
                        exhausted = True
                        continue
                    now = time.monotonic()
                    ref = actor.run.remote(task.fn, task.payload, task.label)
                    self.pending[ref] = (i, task, now, None if timeout is None else now + timeout)
                    self.state[i] = "busy"
            busy = [r for r, (_, t, _, _) in self.pending.items() if t is not None]
            if exhausted and not busy and not first:
                return
            if not self.pending and "idle" not in self.state:
                why = "; ".join(f"{w}: {r}" for w, r in self.refused) or "every actor died while starting"
                raise ExecutorError(f"no usable worker: {why}")
            deadlines = [d for (_, _, _, d) in self.pending.values() if d is not None]
            wait_s = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=wait_s)
            for ref in ready:
                i, task, started, _ = self.pending.pop(ref)
                name = self.inits[i]["name"]
                try:
                    got = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the actor died (exit, signal, lost node)
                    if task is None:
                        self._lost_while_starting(i, _first_line(e))
                    else:
                        self.restarts += 1
                        self._spawn(i)
                        yield Outcome(task, "crashed", detail=f"worker died: {_first_line(e)}", worker=name,
                                      seconds=time.monotonic() - started)
                    continue
                if task is None:
                    why = refusal(got, self.requires)
                    if why:
                        self.state[i] = "refused"
                        self.refused.append((name, why))
                        print(f"executor ray: refused actor {name} on {got.get('host')}: {why}", file=sys.stderr,
                              flush=True)
                        self._kill(i)
                    else:
                        self.state[i], self.tries[i] = "idle", 0
                        self.workers.append({**got, "slot": name})
                    continue
                self.state[i] = "idle"
                status, value, detail, seconds = got
                yield Outcome(task, status, value, detail, f"{name}@{self.where(i)}", seconds)
            now = time.monotonic()
            for ref, (i, task, started, deadline) in list(self.pending.items()):
                if deadline is None or now < deadline or ref in ready:
                    continue
                del self.pending[ref]
                self._kill(i)
                if task is None:
                    self._lost_while_starting(i, f"no hello within {STARTUP_TIMEOUT_S:g}s")
                else:
                    self.restarts += 1
                    self._spawn(i)
                    yield Outcome(task, "timeout", detail=f"no answer within {timeout:g}s; actor killed",
                                  worker=self.inits[i]["name"], seconds=timeout)

    def where(self, i: int) -> str:
        """host/node of actor i (its latest incarnation)."""
        name = self.inits[i]["name"]
        w = next((w for w in reversed(self.workers) if w.get("slot") == name), {})
        return f"{w.get('host', '?')}/{w.get('node', '?')}"

    def close(self) -> None:
        for i in range(len(self.actors)):
            if self.state[i] in ("idle", "busy", "starting"):
                self._kill(i)
            self.state[i] = "closed"
        self.pending.clear()
        if self.owned:
            self.ray.shutdown()
