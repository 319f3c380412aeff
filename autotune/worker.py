"""The worker side of the executors (autotune/executor.py): what runs one task, in any process.

A task names a function ("module:function") and a picklable payload; ``execute`` runs it and answers
(status, value, detail, seconds) with status "ok" or "error" (the function raised; detail says why in
one line). The inline executor calls ``execute`` in the driver; a local worker runs ``main`` (spawned as
``python -m atlas_kernels.autotune.worker FD``) and a Ray actor wraps the same two functions.

Test-only hooks, read from the environment of the worker (so they reach spawned and Ray workers alike):

- ``ATLAS_EXECUTOR_FAULTS="exit:PATTERN;hang:PATTERN;raise:PATTERN;kill:PATTERN;slow:PATTERN"``: a task
  whose label contains PATTERN makes its worker exit (status 3), sleep forever, raise, or SIGKILL itself
  before the task runs (slow: wait a second, then run it). This is how the tests show a run surviving bad
  configs.
- ``ATLAS_EXECUTOR_TARGET="INDEX=NAME,..."``: the worker with that index reports target NAME (a worker
  on the wrong device, which the driver must refuse).

``ATLAS_EXECUTOR_PRELOAD="module,..."``: modules every worker imports after atlas_kernels, e.g. ones that
register out-of-tree kernels (the driver imports them itself).
"""
from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import time

FAULTS_ENV = "ATLAS_EXECUTOR_FAULTS"
TARGET_ENV = "ATLAS_EXECUTOR_TARGET"
PRELOAD_ENV = "ATLAS_EXECUTOR_PRELOAD"
FAULT_EXIT_STATUS = 3


def why(e: BaseException) -> str:
    """One line: the exception's type and the last non-empty line of its message (where compilers put it)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]


def _fault(label: str) -> str | None:
    for item in filter(None, os.environ.get(FAULTS_ENV, "").split(";")):
        action, _, pattern = item.partition(":")
        if pattern and pattern in label:
            return action.strip()
    return None


def _inject(action: str) -> None:
    if action == "exit":
        sys.stderr.write("injected fault: exit\n")
        sys.stderr.flush()
        os._exit(FAULT_EXIT_STATUS)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        while True:
            time.sleep(3600)
    if action == "slow":
        time.sleep(1.0)
        return
    if action == "raise":
        raise RuntimeError(f"injected fault (${FAULTS_ENV})")
    raise ValueError(f"${FAULTS_ENV}: unknown action {action!r} (exit, kill, hang, raise, slow)")


def resolve(fn: str):
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def execute(fn: str, payload, ctx: dict, label: str = "") -> tuple:
    """(status, value, detail, seconds) of one task: status "ok" with the function's value, or "error"."""
    start = time.perf_counter()
    try:
        action = _fault(label)
        if action:
            _inject(action)
        value = resolve(fn)(payload, ctx)
        return "ok", value, "", time.perf_counter() - start
    except Exception as e:  # noqa: BLE001 - a task that raises is recorded, never fatal to its worker
        return "error", None, why(e), time.perf_counter() - start


def describe(ctx: dict) -> dict:
    """What a worker is: host, device, the target detected on it, and its Triton flavour."""
    import torch

    from .._backend import TRITON_FLAVOUR
    from .targets import detect_target
    from .tune import device_name
    device = torch.device(ctx.get("device") or "cpu")
    if device.type == "npu":
        import torch_npu  # noqa: F401  (registers the npu device type)
    target = detect_target(device).name
    for item in filter(None, os.environ.get(TARGET_ENV, "").split(",")):
        index, _, name = item.partition("=")
        if index.strip() == str(ctx.get("index")):
            target = name.strip()
    return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(device),
            "device_name": device_name(device), "target": target, "flavour": TRITON_FLAVOUR,
            "visible": os.environ.get("ASCEND_RT_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))}


def setup(init: dict) -> dict:
    """Apply the driver's init message in this process; the task context."""
    for path in reversed(init.get("sys_path", [])):
        if path not in sys.path:
            sys.path.insert(0, path)
    for name, value in init.get("env", {}).items():
        os.environ[name] = value
    import atlas_kernels  # noqa: F401  (registers every kernel)
    for module in [*init.get("preload", ()), *filter(None, os.environ.get(PRELOAD_ENV, "").split(","))]:
        importlib.import_module(module.strip())
    return {"index": init.get("index"), "device": init.get("device", "cpu"), "name": init.get("name", "")}


def main(fd: int) -> None:
    """A local worker: init, hello, then tasks until "stop" or the driver goes away."""
    from multiprocessing.connection import Connection
    conn = Connection(fd)
    try:
        ctx = setup(conn.recv())
        conn.send(("hello", describe(ctx)))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                return
            _, key, fn, payload, label = msg
            conn.send(("done", key, *execute(fn, payload, ctx, label)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the driver closed the connection


if __name__ == "__main__":
    main(int(sys.argv[1]))
