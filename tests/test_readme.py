"""Every README example that runs on the CPU interpreter runs, and prints what the README says it prints."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
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
