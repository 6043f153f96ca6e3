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


def _bench_step():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_step", BENCH / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_step_counts_the_gemm_work_of_a_step_in_closed_form():
    # simple_cnn at batch 2: conv1 (no dx: the images need no gradient) forward + dW, conv2 and conv3
    # forward + dx + dW, the linear layer forward + dx + dW; 2 FLOPs per multiply-add.
    b = _bench_step()
    n = 2
    expected = (2 * (n * 32 * 32) * 27 * 32 * 2 + 2 * (n * 16 * 16) * 288 * 64 * 3
                + 2 * (n * 8 * 8) * 576 * 128 * 3 + 2 * n * 2048 * 10 * 3)
    assert b.step_gemm_flops("simple_cnn", n) == expected


def test_bench_step_runs_both_modes_each_framework_in_its_own_process():
    env = dict(os.environ, PYTHONPATH=str(BENCH.parent))
    out = subprocess.run([sys.executable, str(BENCH / "bench_step.py"), "--models", "simple_cnn", "--batch", "4",
                          "--steps", "2", "--warmup", "1", "--no-memory", "--no-breakdown"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "train (apply_process_settings):" in out.stdout and "plain `import minicnn`:" in out.stdout
    assert "GEMM work" in out.stdout and "% of peak" in out.stdout
