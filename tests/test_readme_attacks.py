"""The README's "Using the attacks from Python" example runs as written (in a subprocess, with a time limit)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using the attacks from Python"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section '{SECTION}'"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section should hold exactly one python code block"
    return blocks[0]


def test_readme_attacks_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + _example(), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "AttackResult(attack='lira-online-fixedvar'" in out
    assert "AttackResult(attack='loss'" in out
    assert "AttackResult(attack='mia-u'" in out and "DegCount" in out
    assert "refused:" in out                              # the in-sample refusal is part of the example
    assert [p.name for p in tmp_path.iterdir()] == ["example.py"]      # the example writes no files
