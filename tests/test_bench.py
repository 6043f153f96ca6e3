"""bench/: every script is described in bench/README.md, and its --help speaks to users (a subprocess each)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh"))


def test_every_benchmark_is_in_the_readme():
    readme = (BENCH / "README.md").read_text()
    missing = [name for name in SCRIPTS if f"`{name}`" not in readme]
    assert not missing, f"bench/README.md does not describe {missing}"


@pytest.mark.parametrize("name", ["bench_step.py", "bench_layers.py", "bench_explain.py", "bench_two_jobs.py"])
def test_help_runs_and_speaks_to_users(name):
    env = dict(os.environ, PYTHONPATH=str(BENCH.parent))
    out = subprocess.run([sys.executable, str(BENCH / name), "--help"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "issue" not in out.stdout.lower()
