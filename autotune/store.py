"""Tuned-config stores: one JSON file per target, looked up by pick_config.

A store is a directory of ``<target>.json`` files::

    {"schema": 1, "target": "sm_90", "entries": [
      {"kernel": "int4_pack.pack", "variant": "int32-nd", "bucket": [4096, 4096],
       "shape": {"R": 4096, "C": 4096}, "config": {"BLOCK_R": 16, "BLOCK_P": 64, "num_warps": 4},
       "provenance": {"source": "measured", "device": "NVIDIA H100", "date": "2026-11-22T01:00:00Z",
                      "triton": "triton 3.9.0", "library": "0.1.0", "median_ms": 0.0123,
                      "default_ms": 0.0150, "configs": 38}}]}

``kernel`` is the registry name (op.kernel), ``variant`` the dtype/mode key,
``bucket`` the shape key from KernelSpec.tuning.bucket ([] = every shape).
Provenance is either measured (device, date, versions, median time) or
``{"source": "derived", ...}`` (the hardware model's default, exported).

Lookup (resolve): the user's store (ATLAS_KERNELS_CONFIG_DIR, else
$XDG_CACHE_HOME/atlas_kernels, else ~/.cache/atlas_kernels), then the shipped
store (this package's configs/), then KernelSpec.default. In each store the
exact shape bucket wins over a shape-less entry.

When files are read: once per process (the first lookup per target), so a tuner in another process cannot
change the config a running server launches with. Changing ATLAS_KERNELS_CONFIG_DIR / XDG_CACHE_HOME in the
process, ``invalidate()`` and this process's own ``merge_into`` drop the cache. ATLAS_KERNELS_STORE_RELOAD=1
(a tuning session) also re-stats the files at most every RECHECK_S seconds and re-reads the changed ones.

Robustness rules (documented, tested):
- an unreadable, non-UTF-8, non-JSON (or too deeply nested), unknown-schema (``schema`` must be the
  integer 1, not ``true``) or other-target file, or one whose ``entries`` is not a list: one warning, ignored;
- merge_into raises StoreError and writes nothing when the store cannot be written (read-only or missing
  permission, a file where the directory should be) or its existing file cannot be read (it is never
  overwritten unseen); an existing file that reads but does not parse is moved aside to <file>.corrupt;
- a malformed entry, or one whose config is not in the kernel's current config
  space (e.g. written by another library version whose space changed): one
  warning, ignored, the lookup falls through;
- an entry measured with another Triton (flavour or version) or library
  version is still used (a config is only tile sizes, and it is still in the
  space); ``stale()`` names the difference and ``show`` prints it; re-tuning
  replaces it.

Writes (merge_into) take an exclusive flock on ``<file>.lock``, re-read the
file, merge (a new entry replaces one with the same kernel, variant and
bucket), write a temp file in the same directory and os.replace it over the
old one, so readers never see a partial file and concurrent writers lose
nothing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import tempfile
import time
import warnings

from .registry import KERNELS
from .targets import Target

SCHEMA = 1
SHIPPED_DIR = pathlib.Path(__file__).parent / "configs"
ENV_DIR = "ATLAS_KERNELS_CONFIG_DIR"
ENV_RELOAD = "ATLAS_KERNELS_STORE_RELOAD"
RECHECK_S = 1.0  # with ENV_RELOAD set: how often a lookup re-stats the store files


class StoreWarning(UserWarning):
    """A store file or entry was ignored."""


class StoreError(RuntimeError):
    """A store could not be written."""


@dataclasses.dataclass(frozen=True)
class Entry:
    kernel: str
    variant: str
    bucket: tuple
    config: dict
    provenance: dict
    shape: dict | None = None

    @property
    def key(self) -> tuple:
        return (self.kernel, self.variant, self.bucket)

    def to_json(self) -> dict:
        out = {"kernel": self.kernel, "variant": self.variant, "bucket": list(self.bucket)}
        if self.shape is not None:
            out["shape"] = self.shape
        out["config"] = self.config
        out["provenance"] = self.provenance
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Entry":
        if not isinstance(d, dict):
            raise ValueError(f"an entry must be an object, got {type(d).__name__}")
        missing = [k for k in ("kernel", "variant", "bucket", "config", "provenance") if k not in d]
        if missing:
            raise ValueError(f"entry lacks {', '.join(missing)}")
        if not isinstance(d["config"], dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                        for v in d["config"].values()):
            raise ValueError(f"config must map names to ints, got {d['config']!r}")
        if not isinstance(d["bucket"], list) or not isinstance(d["provenance"], dict):
            raise ValueError("bucket must be a list and provenance an object")
        if not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in d["bucket"]):
            raise ValueError(f"bucket must hold ints or strings, got {d['bucket']!r}"[:200])
        if not isinstance(d["kernel"], str) or not isinstance(d["variant"], str):
            raise ValueError("kernel and variant must be strings")
        if d.get("shape") is not None and not isinstance(d["shape"], dict):
            raise ValueError("shape must be an object")
        source = d["provenance"].get("source")
        if source not in ("measured", "derived"):
            raise ValueError(f"provenance.source must be 'measured' or 'derived', got {source!r}")
        return cls(str(d["kernel"]), str(d["variant"]), tuple(d["bucket"]), dict(d["config"]),
                   dict(d["provenance"]), d.get("shape"))


# ---------------------------------------------------------------- files

def user_dir() -> pathlib.Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return pathlib.Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "atlas_kernels"


def store_file(directory, target: str) -> pathlib.Path:
    return pathlib.Path(directory) / f"{target}.json"


def _warn(msg: str) -> None:
    warnings.warn(msg, StoreWarning, stacklevel=3)


def read(path, target: str | None = None) -> list:
    """Entries of one store file; [] (with a warning) for a missing-schema, corrupt or foreign file."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        _warn(f"atlas_kernels: cannot read tuned-config store {path} ({e}); ignoring it")
        return []
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; deep nesting recurses
        _warn(f"atlas_kernels: tuned-config store {path} is not valid JSON ({type(e).__name__}: not UTF-8, "
              f"malformed or nested too deeply); ignoring it")
        return []
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or isinstance(data.get("schema"), bool):
        schema = data.get("schema") if isinstance(data, dict) else None
        _warn(f"atlas_kernels: tuned-config store {path} has schema {schema!r}, this library reads schema "
              f"{SCHEMA}; ignoring it")
        return []
    expected = target or path.stem
    if data.get("target") != expected:
        _warn(f"atlas_kernels: tuned-config store {path} is for target {data.get('target')!r}, not {expected!r}; "
              f"ignoring it")
        return []
    if not isinstance(data.get("entries"), list):
        _warn(f"atlas_kernels: tuned-config store {path}: 'entries' must be a list of entries, got "
              f"{type(data.get('entries')).__name__}; ignoring the file")
        return []
    entries = []
    for i, raw in enumerate(data["entries"]):
        try:
            entries.append(Entry.from_json(raw))
        except (ValueError, TypeError) as e:
            _warn(f"atlas_kernels: {path}: entry {i} ignored: {e}")
    return entries


def _order(e: Entry) -> tuple:
    """Sort key of an entry: buckets may mix ints and strings (``("x", 48)`` next to ``(3,)``)."""
    return (e.kernel, e.variant, tuple((isinstance(v, str), v) for v in e.bucket))


def write(path, target: str, entries) -> None:
    """Atomically replace ``path`` with ``entries`` (temp file in the same directory + os.replace)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, "target": target,
            "entries": [e.to_json() for e in sorted(entries, key=_order)]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def merge_into(directory, target: str, entries) -> pathlib.Path | None:
    """Merge ``entries`` into ``directory``/<target>.json under the lock; return the file.

    An existing file that reads but does not parse is moved aside to ``<file>.corrupt`` (with a
    warning) rather than overwritten. StoreError (nothing written) when the store cannot be written
    (read-only, not a directory, no permission) or the existing file cannot be read.
    """
    path = store_file(directory, target)
    try:
        return _merge_into(path, target, entries)
    except OSError as e:
        raise StoreError(f"atlas_kernels: cannot write tuned-config store {path} ({type(e).__name__}: {e}); "
                         f"the configs were not saved") from e


def _merge_into(path: pathlib.Path, target: str, entries) -> pathlib.Path:
    with _locked(path):
        try:
            path.read_bytes()  # an existing file we cannot read is never replaced unseen
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"atlas_kernels: cannot read the existing tuned-config store {path} "
                             f"({type(e).__name__}: {e}); not overwriting it, the configs were not saved") from e
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            existing = read(path, target)
        if caught and path.exists():
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            _warn(f"atlas_kernels: {path} could not be read in full ({caught[0].message}); moved it to {aside} and "
                  f"kept the {len(existing)} readable entries")
        merged = {e.key: e for e in existing}
        merged.update({e.key: e for e in entries})
        write(path, target, merged.values())
    invalidate()
    return path


# ---------------------------------------------------------------- versions

def current_versions() -> dict:
    from .._version import __version__
    from .._backend import TRITON_FLAVOUR, TRITON_VERSION
    return {"triton": f"{TRITON_FLAVOUR} {TRITON_VERSION}", "library": __version__}


def stale(entry: Entry) -> list:
    """How a measured entry's Triton/library versions differ from the running ones ([] if they match)."""
    if entry.provenance.get("source") != "measured":
        return []
    now = current_versions()
    return [f"{k} {entry.provenance.get(k)!r} (running {now[k]!r})" for k in ("triton", "library")
            if entry.provenance.get(k) != now[k]]


# ---------------------------------------------------------------- lookup

@dataclasses.dataclass(frozen=True)
class Choice:
    """The config a launch uses and where it came from ("user", "shipped" or "derived")."""

    config: dict
    source: str
    path: pathlib.Path | None = None
    entry: Entry | None = None


_files: dict = {}      # path -> (stat signature, {key: Entry})
_resolved: dict = {}   # (kernel, target name, variant, shape_key) -> (target, Choice)
_last_check = [0.0]
_last_where = [None]


def invalidate() -> None:
    """Forget every cached store file and lookup (the tuner calls this after writing)."""
    _files.clear()
    _resolved.clear()


def _signature(path: pathlib.Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _where() -> tuple:
    return (os.environ.get(ENV_DIR), os.environ.get("XDG_CACHE_HOME"), SHIPPED_DIR)


def reload_enabled() -> bool:
    """Whether ATLAS_KERNELS_STORE_RELOAD asks for store files to be re-read when they change (opt-in)."""
    return os.environ.get(ENV_RELOAD, "").strip().lower() in ("1", "true", "yes", "on")


def _recheck() -> None:
    """Drop the caches if the store directories changed (environment); with reloading on, also at most every
    RECHECK_S if a store file changed on disk."""
    where = _where()
    if where != _last_where[0]:
        _last_where[0] = where
        invalidate()
        return
    if not reload_enabled():
        return
    now = time.monotonic()
    if now - _last_check[0] < RECHECK_S:
        return
    _last_check[0] = now
    if any(_signature(p) != sig for p, (sig, _) in list(_files.items())):
        invalidate()


def load(path: pathlib.Path, target: str) -> dict:
    """{key: Entry} of one store file, cached until the file changes."""
    cached = _files.get(path)
    if cached is None:
        sig = _signature(path)
        cached = (sig, {e.key: e for e in read(path, target)} if sig is not None else {})
        _files[path] = cached
    return cached[1]


def _usable(entry: Entry, spec, target: Target, variant) -> bool:
    if entry.config in spec.space(target, variant):
        return True
    warnings.warn(f"atlas_kernels: tuned config {entry.config} for {entry.kernel}[{entry.variant}] bucket "
                  f"{list(entry.bucket)} on {target.name} is not in the kernel's config space (stale store from "
                  f"another library version?); ignoring it", StoreWarning, stacklevel=5)
    return False


def lookup_dirs() -> tuple:
    """(("user", dir), ("shipped", dir)) in lookup order."""
    return (("user", user_dir()), ("shipped", SHIPPED_DIR))


def resolve(kernel: str, target: Target, variant: str, shape_key: tuple = ()) -> Choice:
    """The config for one launch and its origin; cached (files read once, see the module docstring)."""
    _recheck()
    memo = (kernel, target.name, variant, shape_key)
    hit = _resolved.get(memo)
    if hit is not None and hit[0] is target:
        return hit[1]
    spec = KERNELS[kernel]
    var = spec.variant(variant)
    choice = None
    for source, directory in lookup_dirs():
        path = store_file(directory, target.name)
        entries = load(path, target.name)
        for key in ((kernel, variant, shape_key), (kernel, variant, ())):
            entry = entries.get(key)
            if entry is not None and _usable(entry, spec, target, var):
                choice = Choice(dict(entry.config), source, path, entry)
                break
        if choice is not None:
            break
    if choice is None:
        choice = Choice(dict(spec.default(target, var)), "derived")
    _resolved[memo] = (target, choice)
    return choice


def derived_entries(target: Target, kernels=None) -> list:
    """The derived default of every (kernel, variant) on ``target`` as shape-less store entries."""
    from .._version import __version__
    out = []
    for name, spec in sorted(KERNELS.items()):
        if kernels is not None and name not in kernels:
            continue
        for v in spec.variants:
            out.append(Entry(name, v.label, (), dict(spec.default(target, v)),
                             {"source": "derived", "model": "KernelSpec.default", "library": __version__}))
    return out
