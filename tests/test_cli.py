"""The ``minicnn`` command line."""
import subprocess
import sys

import minicnn
from minicnn.cli import main


def test_version_module_and_script():
    out = subprocess.run([sys.executable, "-m", "minicnn", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"minicnn {minicnn.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: minicnn" in capsys.readouterr().out
