"""Every README example that runs on the CPU interpreter runs, and prints what the README says it prints."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# a ```python block, optionally followed by a line "prints" and a plain ``` block with the expected stdout
EXAMPLE = re.compile(r"```python\n(.*?)```\n(?:\nprints\n\n```\n(.*?)```\n)?", re.S)
EXAMPLES = [(code, expected) for code, expected in EXAMPLE.findall(README) if "TRITON_INTERPRET" in code]


def test_readme_has_runnable_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("code, expected", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example(code, expected):
    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    if expected:
        assert r.stdout == expected


def test_first_screen_gives_the_two_commands_that_ci_runs():
    first_screen = "\n".join(README.splitlines()[:25])
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("make test", "make bench"):
        assert command in first_screen
        assert re.search(rf"^{command}\b", ci, re.M), command


def test_make_builds_the_environments_only_when_their_stamps_are_missing_or_stale(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
        os.utime(tmp_path / name, (1000, 1000))

    def dry_run(target):
        # a clean environment: under `make test` the inherited MAKELEVEL/MAKEFLAGS add "Entering directory" lines
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
        r = subprocess.run(["make", "-n", target, "PYTHON=python3", "ARGS=", "FULL="], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        return [line.strip() for line in r.stdout.splitlines()]

    fresh = dry_run("test")
    assert {"python3 -m venv .venv", "python3 -m venv .venv-ascend"} <= set(fresh), fresh
    assert fresh[-1] == ".venv/bin/python -m pytest -n 2", fresh
    for venv in (".venv", ".venv-ascend"):
        (tmp_path / venv).mkdir()
        (tmp_path / venv / ".installed").touch()
        os.utime(tmp_path / venv / ".installed", (2000, 2000))
    assert dry_run("test") == [".venv/bin/python -m pytest -n 2"]
    assert dry_run("bench") == [".venv/bin/python bench/run.py --quick"]
    os.utime(tmp_path / "pyproject.toml", (3000, 3000))  # changed since the install: install again
    assert dry_run("bench")[0] == "python3 -m venv .venv"
