"""Executors: run many small tasks (time one config, compile one config) on every device of a host or a cluster.

One interface, three backends:

- ``inline``: in this process, one task after another (what the tuner and the checks always did);
- ``local``: one long-lived worker process per device (pinned with ASCEND_RT_VISIBLE_DEVICES or
  CUDA_VISIBLE_DEVICES, each with its own Triton cache directory), or one per core for CPU work;
- ``ray`` (``pip install atlas-kernels[distributed]``): one Ray actor per device or core of a cluster
  (autotune/executor_ray.py).

The driver hands each free worker the next task and waits with a deadline. A task that raises comes back
as "error"; one that outlives ``timeout`` is "timeout" and its worker is killed; one whose worker dies
(exit, signal, out of memory) is "crashed". Either way the worker is restarted and the run goes on. A worker
whose detected target (or Triton flavour) differs from what the job requires is refused before it gets
any task. Outcomes come back as they arrive; ``Journal`` appends each to a JSONL file so that ``--resume``
skips what is done.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

EXECUTORS = ("inline", "local", "ray")
STARTUP_TIMEOUT_S = 600.0
STARTUP_TRIES = 3  # a worker slot that dies this often in a row while starting is given up


@dataclasses.dataclass
class Task:
    key: str        # unique within a run: the journal key
    fn: str         # "module:function", called in the worker as fn(payload, ctx)
    payload: object  # picklable (and JSON-able values come back to the journal)
    label: str = ""  # for people: progress, failures, fault patterns


@dataclasses.dataclass
class Outcome:
    task: Task
    status: str      # "ok", "error" (raised), "timeout", "crashed" (worker died), "not run"
    value: object = None
    detail: str = ""  # one line: why it failed
    worker: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ExecutorError(RuntimeError):
    """No worker could run the tasks (all refused or dead)."""


def refusal(info: dict, requires: dict) -> str | None:
    """Why a worker described by ``info`` may not run a job that ``requires`` {key: value} (None: it may)."""
    wrong = [f"{k} {info.get(k)!r}, the job's is {v!r}" for k, v in requires.items() if info.get(k) != v]
    return "; ".join(wrong) or None


class Executor:
    """Runs tasks; ``run`` yields an Outcome per task as it finishes (in any order)."""

    name = "?"
    restarts = 0
    workers: list = []  # one description (worker.describe) per accepted worker
    refused: list = []  # (worker, why)

    def run(self, tasks, timeout: float | None = None):
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InlineExecutor(Executor):
    """In this process, in order. No timeout and no recovery: a task that hangs or exits takes the run down."""

    name = "inline"

    def __init__(self, device: str = "cpu", requires: dict | None = None):
        from .worker import describe
        self.ctx = {"index": 0, "device": device, "name": f"inline:{device}"}
        info = describe(self.ctx)
        why = refusal(info, requires or {})
        if why:
            raise ExecutorError(f"this process cannot run the job: {why}")
        self.workers, self.refused = [{**info, "slot": self.ctx["name"]}], []

    def run(self, tasks, timeout: float | None = None):
        from .worker import execute
        for task in tasks:
            status, value, detail, seconds = execute(task.fn, task.payload, self.ctx, task.label)
            yield Outcome(task, status, value, detail, self.ctx["name"], seconds)


# ---------------------------------------------------------------- local: one spawned worker per device

@dataclasses.dataclass
class Slot:
    """One worker place: a device (as the worker sees it) and the environment that pins it."""

    name: str            # for people: "npu:3", "cpu:1"
    device: str = "cpu"  # the torch device inside the worker
    env: dict = dataclasses.field(default_factory=dict)


def device_slots(kind: str, devices: list) -> list:
    """A slot per device index; npu/cuda workers see only their device (as index 0)."""
    var = {"npu": "ASCEND_RT_VISIBLE_DEVICES", "cuda": "CUDA_VISIBLE_DEVICES"}.get(kind)
    if var is None:
        return [Slot(f"cpu:{d}") for d in devices]
    return [Slot(f"{kind}:{d}", f"{kind}:0", {var: str(d)}) for d in devices]


def cpu_slots(n: int) -> list:
    return [Slot(f"cpu:{i}") for i in range(max(1, n))]


def triton_cache_dir(slot_name: str) -> str:
    """A Triton cache directory per worker (two processes never race on one), kept across runs."""
    base = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return os.path.join(base, "atlas-worker-" + slot_name.replace(":", "-"))


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class _Proc:
    """One running local worker."""

    def __init__(self, slot: Slot, index: int, log_dir: str, preload: tuple):
        from multiprocessing.connection import Connection
        parent, child = socket.socketpair()
        env = {**os.environ, **slot.env, "TRITON_CACHE_DIR": triton_cache_dir(slot.name)}
        self.log_path = os.path.join(log_dir, slot.name.replace(":", "-") + ".log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "atlas_kernels.autotune.worker", str(child.fileno())],
                                     pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        child.close()
        self.conn = Connection(parent.detach())
        self.conn.send({"index": index, "device": slot.device, "name": slot.name, "sys_path": sys.path,
                        "preload": list(preload)})
        self.state, self.task, self.log_at = "starting", None, 0
        self.started, self.deadline = time.monotonic(), time.monotonic() + STARTUP_TIMEOUT_S

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: bishengir & co go with it
        except ProcessLookupError:
            pass
        self.finish()

    def finish(self) -> int | None:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.conn.close()
        self.log.close()
        return code

    def log_tail(self) -> str:
        """The last non-empty line the worker printed since its task began."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_at)
                lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""


class LocalExecutor(Executor):
    """One long-lived worker process per slot, spawned fresh (no fork: device runtimes do not survive it)."""

    name = "local"

    def __init__(self, slots: list, requires: dict | None = None, preload=(), log_dir: str | None = None,
                 quiet: bool = False):
        import tempfile
        self.slots, self.requires, self.preload = list(slots), requires or {}, tuple(preload)
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="atlas-workers-")
        self.quiet = quiet
        self.restarts, self.workers, self.refused, self.last_loss = 0, [], [], ""
        self.procs, self.tries = [], [0] * len(self.slots)  # spawned when the first task comes

    def _spawn(self, i: int) -> _Proc:
        return _Proc(self.slots[i], i, self.log_dir, self.preload)

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"executor local: {text}", file=sys.stderr, flush=True)

    def _restart(self, i: int) -> None:
        self.restarts += 1
        self.procs[i] = self._spawn(i)

    def _lost_while_starting(self, i: int, why: str) -> None:
        p = self.procs[i]
        self.tries[i] += 1
        self.last_loss = f"{self.slots[i].name}: {why}"
        if self.tries[i] >= STARTUP_TRIES:
            p.state = "dead"
            self._say(f"worker {self.slots[i].name} gave up: {why} ({STARTUP_TRIES} tries; log {p.log_path})")
        else:
            self.procs[i] = self._spawn(i)

    def run(self, tasks, timeout: float | None = None):
        from multiprocessing.connection import wait
        tasks, resend = iter(tasks), []
        exhausted = False
        if not self.procs:
            first = next(tasks, None)
            if first is None:  # nothing to do (a resumed run): start no worker
                return
            resend.append(first)
            self.procs = [self._spawn(i) for i in range(len(self.slots))]
        while True:
            for i, p in enumerate(self.procs):  # each idle worker gets the next task (pulled lazily: budgets)
                if p.state == "idle" and not (exhausted and not resend):
                    task = resend.pop() if resend else next(tasks, None)
                    if task is None:
                        exhausted = True
                        continue
                    p.log_at = os.path.getsize(p.log_path) if os.path.exists(p.log_path) else 0
                    try:
                        p.conn.send(("task", task.key, task.fn, task.payload, task.label))
                    except OSError:  # it died between tasks: the task was never its
                        p.kill()
                        self._restart(i)
                        resend.append(task)
                        continue
                    p.state, p.task = "busy", task
                    p.deadline = None if timeout is None else time.monotonic() + timeout
                    p.started = time.monotonic()
            busy = [p for p in self.procs if p.state == "busy"]
            starting = [p for p in self.procs if p.state == "starting"]
            if exhausted and not busy and not resend:
                return
            if not busy and not starting and not any(p.state == "idle" for p in self.procs):
                why = "; ".join(f"{w}: {r}" for w, r in self.refused) or (
                    f"every worker died while starting, the last: {self.last_loss}")
                raise ExecutorError(f"no usable worker: {why} (logs in {self.log_dir})")
            deadlines = [p.deadline for p in busy + starting if p.deadline is not None]
            wait_s = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            ready = wait([p.conn for p in busy + starting], timeout=wait_s)
            for p in busy + starting:
                i = self.procs.index(p)
                if p.conn in ready:
                    try:
                        msg = p.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:  # the worker died
                        tail, code = p.log_tail(), p.finish()
                        why = _exit_text(code) + (f": {tail}" if tail else "")
                        if p.state == "busy":
                            self._restart(i)
                            yield Outcome(p.task, "crashed", detail=f"worker {why}", worker=self.slots[i].name,
                                          seconds=time.monotonic() - p.started)
                        else:
                            self._lost_while_starting(i, f"worker {why}")
                    elif msg[0] == "hello":
                        why = refusal(msg[1], self.requires)
                        if why:
                            p.state = "refused"
                            self.refused.append((self.slots[i].name, why))
                            self._say(f"refused worker {self.slots[i].name}: {why}")
                            p.conn.send(("stop",))
                            p.finish()
                        else:
                            p.state, p.deadline, self.tries[i] = "idle", None, 0
                            self.workers.append({**msg[1], "slot": self.slots[i].name})
                    else:
                        _, key, status, value, detail, seconds = msg
                        p.state, task, p.task = "idle", p.task, None
                        yield Outcome(task, status, value, detail, self.slots[i].name, seconds)
                elif p.deadline is not None and time.monotonic() >= p.deadline:
                    p.kill()
                    if p.state == "busy":
                        self._restart(i)
                        yield Outcome(p.task, "timeout", detail=f"no answer within {timeout:g}s; worker killed",
                                      worker=self.slots[i].name, seconds=timeout)
                    else:
                        self._lost_while_starting(i, f"no hello within {STARTUP_TIMEOUT_S:g}s")

    def close(self) -> None:
        for p in self.procs:
            if p.state in ("idle", "busy", "starting"):
                try:
                    p.conn.send(("stop",))
                except OSError:
                    pass
        for p in self.procs:
            if p.state in ("idle", "busy", "starting"):
                if p.state != "idle":
                    p.kill()
                else:
                    p.finish()
                p.state = "closed"


# ---------------------------------------------------------------- journal

class Journal:
    """Outcomes as JSON lines, appended as they arrive (flushed), so a killed run loses at most one line.

    resume=False moves an existing file aside (<name>.prev); resume=True reads it: ``done`` maps each
    finished task's key to its record.
    """

    def __init__(self, path, resume: bool = False):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict = {}
        if resume and self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line torn by a kill
                    if isinstance(rec, dict) and "key" in rec:
                        self.done[rec["key"]] = rec
        elif self.path.exists() and self.path.stat().st_size:
            os.replace(self.path, self.path.with_name(self.path.name + ".prev"))
        self.file = open(self.path, "a", encoding="utf-8")

    def append(self, outcome: Outcome, **extra) -> dict:
        rec = {"key": outcome.task.key, "label": outcome.task.label, "status": outcome.status,
               "value": outcome.value, "detail": outcome.detail, "worker": outcome.worker,
               "seconds": round(outcome.seconds, 4), **extra}
        self.file.write(json.dumps(rec, default=str) + "\n")
        self.file.flush()
        self.done[rec["key"]] = rec
        return rec

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------- options and the command line

@dataclasses.dataclass
class Options:
    """How to run: which executor, on which devices / cluster, with what per-task timeout and journal."""

    kind: str | None = None        # None: local when more than one device is visible, else inline
    devices: list | None = None    # device indices (local, ray); None: every visible one
    address: str | None = None     # ray: a running cluster ("auto", "ray://host:10001"); None: start one here
    timeout: float | None = None   # per task, on the driver's side (local, ray); None: the caller's default
    journal: str | None = None
    resume: bool = False


def add_arguments(parser, journal: bool = True, devices: bool = True) -> None:
    """The executor options of ``autotune tune`` and of ``checks`` (no --devices: CPU work, --jobs workers)."""
    parser.add_argument("--executor", choices=EXECUTORS,
                        help="inline: in this process (checks: today's forked pool); local: one worker process per "
                             "device (checks: --jobs workers); ray: Ray actors on a cluster (pip install "
                             "atlas-kernels[distributed]). Default: local when more than one device is visible, "
                             "else inline")
    if devices:
        parser.add_argument("--devices", help="device indices for the workers, e.g. 0,1,2,3 (default: every visible "
                                              "one; for CPU work, as many workers as indices)")
    parser.add_argument("--address", help="ray: address of a running cluster (e.g. auto, or ray://head:10001); "
                                          "default: start Ray on this machine")
    parser.add_argument("--timeout", type=float, help="seconds one config may take before its worker is killed "
                                                      "and it is recorded as timed out (local, ray)")
    if journal:
        parser.add_argument("--journal", help="JSONL file every result is appended to as it arrives")
        parser.add_argument("--resume", action="store_true", help="skip what the journal already holds")


def options_of(args) -> Options:
    devices = getattr(args, "devices", None)
    if devices:
        try:
            devices = [int(d) for d in devices.split(",")]
        except ValueError:
            raise ValueError(f"--devices: {args.devices!r} is not a comma-separated list of device indices") from None
    return Options(getattr(args, "executor", None), devices, getattr(args, "address", None),
                   getattr(args, "timeout", None), getattr(args, "journal", None), getattr(args, "resume", False))
