"""The ``minicnn`` command line, run as a user runs it: a subprocess, its output and exit status."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minicnn
from minicnn.cli import main


def run_cli(*args, env=None, timeout=120):
    """``python -m minicnn ARGS`` in a subprocess: (exit status, stdout, stderr)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    out = subprocess.run([sys.executable, "-m", "minicnn", *map(str, args)], capture_output=True, text=True,
                         env=full_env, timeout=timeout)
    return out.returncode, out.stdout, out.stderr


def test_version_module_and_script():
    out = subprocess.run([sys.executable, "-m", "minicnn", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"minicnn {minicnn.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: minicnn" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["train", "eval"])
def test_help_shows_defaults_and_examples(verb):
    rc, out, err = run_cli(verb, "--help")
    assert rc == 0 and err == ""
    assert "examples:" in out and f"minicnn {verb} --" in out.split("examples:")[1]
    assert "(default: cpu)" in out                       # defaults are shown
    assert "%%" not in out and "%(" not in out
    if verb == "train":
        flat = " ".join(out.split())
        assert "fast_cnn for the fast recipe, simple_cnn for the standard one" in flat
        assert "(default: fast 256, standard 128)" in flat and "(default: 7)" in out and "--recipe" in out
        assert "50% and 75%" in out and "--max-minutes" in out and "--adversarial" in out
    else:
        assert "--no-progress" in out


@pytest.mark.parametrize("args, option, value", [
    (["--epochs", "0"], "--epochs", "0"),
    (["--batch-size", "-3"], "--batch-size", "-3"),
    (["--lr", "fast"], "--lr", "'fast'"),
    (["--lr", "0"], "--lr", "0"),
    (["--seed", "x"], "--seed", "'x'"),
    (["--adv-eps", "1/0"], "--adv-eps", "'1/0'"),
    (["--max-minutes", "-1"], "--max-minutes", "-1"),
])
def test_argument_errors_name_the_option_and_value(args, option, value):
    rc, out, err = run_cli("train", *args)
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"minicnn train: error: argument {option}") and value in last
    assert "_positive" not in err and "invalid" not in last and " int value" not in last


def test_fraction_arguments_are_accepted():
    from minicnn.cli import build_parser

    args = build_parser().parse_args(["train", "--adv-eps", "8/255", "--max-minutes", "1.5"])
    assert args.adv_eps == 8 / 255 and args.max_minutes == 1.5 and args.model is None and args.recipe is None


def test_train_without_model_is_the_fast_recipe_and_max_minutes_caps_it(tiny_tree, tmp_path):
    """No --model: the fast recipe (minutes on a CPU), never ResNet-20 for 182 epochs; the cap stops, saves, tests."""
    out = tmp_path / "run"
    rc, stdout, stderr = run_cli("train", "--data", tiny_tree, "--out", out, "--max-minutes", "0.0001",
                                 "--batch-size", "20", "--no-progress")
    assert rc == 0, stderr
    assert "model: fast_cnn" in stdout and "recipe fast" in stdout and "8 epochs" in stdout
    assert "resnet" not in stdout
    assert "stopped at the --max-minutes 0.0001 cap" in stdout and "test accuracy:" in stdout
    assert (out / "last.npz").is_file() and (out / "test.json").is_file()
    ckpt = minicnn.load(str(out / "last.npz"))
    assert (ckpt["epoch"], ckpt["step"]) == (0, 1)


def test_out_is_checked_before_any_work(tiny_tree, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    cache = tmp_path / "fresh_cache"                        # decoding would create it
    for out, msg in ((afile, "is a file, not a folder"), (afile / "run", "cannot create it")):
        rc, stdout, stderr = run_cli("train", "--data", tiny_tree, "--out", out, env={"MINICNN_CACHE": str(cache)})
        assert rc == 2 and f"--out {out}" in stderr and msg in stderr and "Traceback" not in stderr
        assert not cache.exists() and stdout == ""


def test_diverged_run_says_no_checkpoint_and_leaves_no_empty_folder(tiny_tree, tmp_path):
    out = tmp_path / "runs" / "diverged"
    rc, stdout, stderr = run_cli("train", "--model", "simple_cnn", "--data", tiny_tree, "--out", out, "--lr", "1e30",
                                 "--no-progress", "--val-split", "0")
    assert rc == 2 and "the loss became nan" in stderr and "no checkpoint was written yet" in stderr
    assert "last good checkpoint" not in stderr and "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()


def test_sigterm_saves_a_checkpoint_and_exits_nonzero(tiny_tree, tmp_path):
    """A real SIGTERM to a real training process: the estimate line shows training runs, then the signal."""
    out = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, "-m", "minicnn", "train", "--data", tiny_tree, "--out", str(out), "--epochs", "40",
         "--batch-size", "8", "--val-split", "0", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        seen = []
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("estimated "):
                break
            assert time.monotonic() < deadline, "".join(seen)
        assert seen and seen[-1].startswith("estimated ") and "for 40 epochs" in seen[-1], "".join(seen)
        assert " remaining (" in seen[-1] and " in all for 40 epochs" in seen[-1]     # which of the two it is
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    text = "".join(seen) + rest
    assert "SIGTERM: finishing this step, then saving a checkpoint" in text
    assert "interrupted (SIGTERM)" in text and "--resume" in text and "Traceback" not in err
    ckpt = minicnn.load(str(out / "last.npz"))
    assert ckpt["epoch"] * 25 + ckpt["step"] >= 21           # the steps done before the signal are kept


@pytest.fixture
def test_only_tree(tiny_tree, tmp_path):
    """tiny_tree's test split beside a train split that cannot be decoded: only eval may use this tree."""
    root = tmp_path / "test_only"
    root.mkdir()
    os.symlink(os.path.join(tiny_tree, "test"), root / "test")
    (root / "train" / "airplane").mkdir(parents=True)
    (root / "train" / "airplane" / "0000.png").write_text("not an image")
    return root


def test_eval_reads_only_the_test_split(trained_checkpoint, test_only_tree):
    rc, stdout, stderr = run_cli("eval", "--checkpoint", trained_checkpoint, "--data", test_only_tree,
                                 "--no-progress")
    assert rc == 0, stderr
    assert "test accuracy:" in stdout and "confusion matrix" in stdout
    assert stderr == ""                                    # --no-progress: no bars


def test_eval_errors_fit_the_cli(trained_checkpoint, tiny_tree, tmp_path):
    rc, _, err = run_cli("eval", "--checkpoint", tmp_path, "--data", tiny_tree)
    assert rc == 2 and f"checkpoint {tmp_path} is a directory" in err

    text = tmp_path / "notes.npz"
    text.write_text("these are my notes, not weights")
    rc, _, err = run_cli("eval", "--checkpoint", text, "--data", tiny_tree)
    assert rc == 2 and "not a minicnn checkpoint" in err
    assert "pickle" not in err and "allow_pickle" not in err and "Traceback" not in err

    rc, _, err = run_cli("eval", "--checkpoint", trained_checkpoint, "--data", tiny_tree, "--model", "lenet5")
    assert rc == 2 and "simple_cnn checkpoint, which does not fit model lenet5" in err
    assert "strict=False" not in err and "leave out --model" in err
    assert "shape" in err or "is not in" in err           # the first mismatched key is named


@pytest.mark.slow
def test_adversarial_training_from_the_cli(tiny_tree, tmp_path):
    pytest.importorskip("minicnn.attacks")
    out = tmp_path / "robust"
    rc, stdout, stderr = run_cli("train", "--data", tiny_tree, "--out", out, "--epochs", "1", "--val-split", "0",
                                 "--adversarial", "pgd", "--adv-eps", "8/255", "--adv-steps", "2", "--no-progress")
    assert rc == 0, stderr
    assert "adversarial training: pgd, eps 0.03137" in stdout and "2 steps" in stdout
    assert minicnn.load_model(str(out / "last.npz")).classes[0] == "airplane"


def test_help_formatter_leaves_out_unknown_defaults():
    import argparse

    from minicnn.cli.common import HelpFormatter, positive_int

    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", type=positive_int, default=3, help="a number")
    p.add_argument("--b", default=None, help="depends")
    p.add_argument("--c", action="store_true", help="a flag")
    p.add_argument("--d", type=float, default=0.0, help="zero is a default too")
    text = p.format_help()
    assert "a number (default: 3)" in text and "zero is a default too (default: 0.0)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert positive_int.__name__ == "positive integer"
    assert np.isclose(minicnn.cli.common.number("8/255"), 8 / 255)


def test_train_and_eval_apply_the_process_settings_first(monkeypatch, tmp_path, capsys):
    import minicnn.speed

    calls = []
    monkeypatch.setattr(minicnn.speed, "apply_process_settings", lambda: calls.append(1) or {})
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.npz")]) == 2
    assert main(["train", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "nowhere")]) == 2
    assert len(calls) >= 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("verb", [
    ["explain", "--checkpoint", "missing.npz"],
    ["attack", "--checkpoint", "missing.npz"],
    ["synthesize", "class-model", "--checkpoint", "missing.npz"],
    ["doctor", "--model", "simple_cnn"],
])
def test_out_that_cannot_be_written_is_one_clear_line(tmp_path, verb):
    """Every verb that writes files refuses an --out that is a file, naming the option, with no traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out, err = run_cli(*verb, "--out", str(blocker / "sub"))
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    assert "--out" in err and str(blocker) in err


def _start_training(args, until):
    """``minicnn train ARGS`` in a subprocess, read until a line that starts with ``until``: (process, lines)."""
    proc = subprocess.Popen([sys.executable, "-m", "minicnn", "train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen, deadline = [], time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(until):
            return proc, seen
        assert time.monotonic() < deadline, "".join(seen)
    proc.kill()
    raise AssertionError("".join(seen) + proc.stderr.read())


def test_ctrl_c_during_the_final_test_stops_at_once_and_exits_130(tmp_path):
    """The test set is not finished first: Ctrl-C stops within seconds, exit 130, no test report."""
    from conftest import make_image_tree

    tree = make_image_tree(tmp_path / "tree", n_train=4, n_test=150)      # 1,500 test images, several views each
    out = tmp_path / "run"
    proc, seen = _start_training(["--data", tree, "--out", out, "--epochs", "1", "--batch-size", "20",
                                  "--no-progress"], until="testing on")
    try:
        assert "testing on 1,500 images with test-time augmentation (flip-translate)" in seen[-1]
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (rest, err)
    assert took < 5, took                                    # (a whole test here takes much longer)
    assert "interrupted (SIGINT) during the test" in rest and "minicnn eval --checkpoint" in rest
    assert "Traceback" not in err and "Exception" not in err
    assert (out / "last.npz").is_file() and not (out / "test.json").exists()


def test_a_second_ctrl_c_aborts_cleanly_and_saves_nothing(tiny_tree, tmp_path):
    """Ctrl-C twice within one (long) step: no traceback (the loader's thread neither), no checkpoint."""
    out = tmp_path / "run"
    proc, seen = _start_training(["--model", "resnet20", "--data", tiny_tree, "--out", out, "--epochs", "1",
                                  "--batch-size", "200", "--val-split", "0", "--no-progress"], until="flips")
    try:
        time.sleep(1.0)                                      # inside the first step (seconds on a CPU)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (rest, err)
    assert "Ctrl-C: finishing this step" in rest and "Ctrl-C again: aborted, nothing more is saved" in rest
    assert "Traceback" not in err and "Exception" not in err and "interrupted (SIGINT) at" not in rest
    assert not (out / "last.npz").exists()


def test_top_level_help_quotes_the_fast_recipe():
    from minicnn.train.config import RECIPE_RESULTS, RECIPES

    rc, out, err = run_cli("--help")
    assert rc == 0
    flat = " ".join(out.split())
    assert f"the fast recipe: fast_cnn, {RECIPES['fast']['epochs']} epochs" in flat
    assert " ".join(RECIPE_RESULTS["fast"].split()) in flat and "simple_cnn on CIFAR-10" not in flat


def test_prepare_run_is_the_preamble_of_every_training_verb(monkeypatch):
    """Process settings first, then the device check, then the config from the options (and the verb's values)."""
    import argparse
    from dataclasses import dataclass

    import minicnn.speed
    from minicnn.cli.common import CLIError, prepare_run

    calls = []
    monkeypatch.setattr(minicnn.speed, "apply_process_settings", lambda: calls.append("settings") or {})

    @dataclass
    class Config:
        out: str = "x"
        epochs: int = 1
        seed: int = 0
        progress: bool = True

    args = argparse.Namespace(epochs=3, seed=7, progress=False, device="cpu", out=None, func=print, command="t")
    cfg = prepare_run(args, Config, out="runs/t")
    assert cfg == Config(out="runs/t", epochs=3, seed=7, progress=False) and calls == ["settings"]
    assert prepare_run(args) is None and calls == ["settings"] * 2
    if not minicnn.backend.is_gpu_available():
        with pytest.raises(CLIError, match="--device gpu: no GPU"):
            prepare_run(argparse.Namespace(device="gpu"), Config)
