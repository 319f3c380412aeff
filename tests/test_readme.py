"""Every ```python block in README.md and docs/*.md runs and prints what it says it prints (docs/design.md,
"Documentation examples"); README's first screen, length and links; the Makefile's environment stamps."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.relative_to(ROOT).as_posix(): p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
# a ```python block (```python no-run: shown, not run), optionally followed by a line "prints" and a plain ``` block
# with the expected stdout
BLOCK = re.compile(r"^```python( no-run)?\n(.*?)^```\n(?:\nprints\n\n```\n(.*?)^```\n)?", re.S | re.M)
BLOCKS = [(f"{name}-{i}", bool(no_run), code, expected)
          for name, text in DOCS.items() for i, (no_run, code, expected) in enumerate(BLOCK.findall(text))]
EXAMPLES = [(name, code, expected) for name, no_run, code, expected in BLOCKS if not no_run]
NO_RUN = [(name, code) for name, no_run, code, _ in BLOCKS if no_run]
MAX_NO_RUN = 3  # blocks that need a GPU or an NPU; everything else must run on the CPU interpreter


def test_every_python_block_is_collected():
    """A fence the pattern misses (```py, ```python3, a "prints" block not right after it) would never run."""
    for name, text in DOCS.items():
        fences = len(re.findall(r"^```py", text, re.M))
        assert fences == len(BLOCK.findall(text)), f"{name}: a python fence the test does not recognise"
        assert text.count("\nprints\n") == len(re.findall(r"^```\n\nprints\n\n```\n", text, re.M)), name


def test_readme_has_three_runnable_examples():
    assert sum(name.startswith("README.md-") for name, _, _ in EXAMPLES) >= 3


def test_no_run_blocks_are_few_say_why_and_compile():
    assert len(NO_RUN) <= MAX_NO_RUN, [name for name, _ in NO_RUN]
    for name, code in NO_RUN:
        assert code.startswith("# "), f"{name}: a no-run block says in its first line why it cannot run here"
        compile(code, name, "exec")


@pytest.mark.parametrize("name, code, expected", EXAMPLES, ids=[name for name, _, _ in EXAMPLES])
def test_doc_example(name, code, expected):
    # as a user runs it: the example sets TRITON_INTERPRET itself when it needs the interpreter
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    if expected:
        assert r.stdout == expected


def test_readme_is_short_and_keeps_the_models_section():
    assert len(README.splitlines()) <= 250
    section = README.split("\n## Quantized models\n", 1)[1].split("\n## ", 1)[0]
    assert "docs/models.md" in section


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_resolve():
    """Every relative link in README.md and docs/ names a file that exists, and a heading where it has an anchor."""
    for name, text in DOCS.items():
        base = (ROOT / name).parent
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (base / path).resolve() if path else ROOT / name
            assert file.exists(), f"{name}: link to {target}: no such file"
            if anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", file.read_text(), re.M)
                assert anchor in {_anchor(h) for h in headings}, f"{name}: link to {target}: no such heading"


def test_first_screen_gives_the_two_commands_that_ci_runs():
    first_screen = "\n".join(README.splitlines()[:25])
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("make test", "make bench"):
        assert command in first_screen
        assert re.search(rf"^{command}\b", ci, re.M), command
    # CI: a missing .venv-ascend fails the tests that need it instead of skipping them (tests/test_checks.py)
    assert re.search(r"^export CI=1$", ci, re.M)


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
