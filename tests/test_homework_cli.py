"""``minicnn homework`` through a subprocess: list, start, check, grade (CSV, Gradescope), use."""
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

from homework_catalogue import SOLUTIONS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minicnn", "homework", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_list_names_every_assignment_in_lesson_order(tmp_path):
    r = run("list", cwd=tmp_path)
    assert r.returncode == 0
    for name in ("autograd_ops", "activations", "softmax_ce", "im2col", "conv2d", "max_pool", "avg_pool",
                 "batchnorm", "dropout", "he_init", "optimizers", "saliency", "fgsm", "gradcam"):
        assert name in r.stdout
    assert r.stdout.index("im2col") < r.stdout.index("conv2d") < r.stdout.index("gradcam")
    assert "pts" in r.stdout and "docs/02-convolution.md" in r.stdout


def test_start_then_check_a_skeleton_then_the_solution(tmp_path):
    r = run("start", "conv2d", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "conv2d.py").exists()
    text = (tmp_path / "conv2d.py").read_text()
    assert "TODO" in text and "NotImplementedError" in text and "__main__" in text and "cols @ W2.T" in text
    again = run("start", "conv2d", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "conv2d.py").read_text() == text
    r = run("check", "conv2d", cwd=tmp_path)
    assert r.returncode == 1 and "FAIL" in r.stdout and "score: 0 / 20" in r.stdout
    shutil.copy(SOLUTIONS / "conv2d.py", tmp_path / "conv2d.py")
    r = run("check", "conv2d", cwd=tmp_path)
    assert r.returncode == 0 and "full marks" in r.stdout, r.stdout + r.stderr


def test_start_a_notebook_and_check_it(tmp_path):
    r = run("start", "relu_typo", cwd=tmp_path)
    assert r.returncode == 2 and "no assignment 'relu_typo'" in r.stderr
    r = run("start", "max_pool", "--notebook", "--dir", "nb", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "nb" / "max_pool.ipynb").exists()
    r = run("check", "max_pool", "nb/max_pool.ipynb", cwd=tmp_path)
    assert r.returncode == 1 and "NotImplementedError" in r.stdout


def test_check_without_a_file_says_how_to_start(tmp_path):
    r = run("check", "batchnorm", cwd=tmp_path)
    assert r.returncode == 2 and "minicnn homework start batchnorm" in r.stderr and "Traceback" not in r.stderr


def test_grade_a_folder_to_csv(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(SOLUTIONS / "max_pool.py", subs / "alice.py")
    (subs / "bob").mkdir()
    (subs / "bob" / "max_pool.py").write_text((SOLUTIONS / "max_pool.py").read_text().replace(
        "dy * (at == k)", "dy"))
    (subs / "carol.py").write_text("import os\nos.abort()\n")
    r = run("grade", "subs", "--assignment", "max_pool", "--csv", "grades.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["student"]: row for row in csv.DictReader(open(tmp_path / "grades.csv"))}
    assert set(rows) == {"alice", "bob", "carol"}
    assert rows["alice"]["full_marks"] == "True" and float(rows["alice"]["score"]) == 10
    assert rows["bob"]["full_marks"] == "False" and "whole window" in rows["bob"]["first_failure"]
    assert float(rows["carol"]["score"]) == 0 and "crashed" in rows["carol"]["first_failure"]


def test_grade_writes_gradescope_results_json(tmp_path):
    sub = tmp_path / "submission"
    sub.mkdir()
    (sub / "dropout.py").write_text((SOLUTIONS / "dropout.py").read_text().replace(" / x.dtype.type(1 - p)", ""))
    r = run("grade", "submission", "--assignment", "dropout", "--gradescope", "results.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.load(open(tmp_path / "results.json"))
    assert 0 <= result["score"] < 5
    assert {"name", "score", "max_score", "output"} <= set(result["tests"][0])
    assert sum(t["max_score"] for t in result["tests"]) == 5
    assert any("not rescaled" in t["output"] for t in result["tests"])
    many = tmp_path / "many"
    many.mkdir()
    for s in ("a", "b"):
        shutil.copy(SOLUTIONS / "dropout.py", many / f"{s}.py")
    r = run("grade", "many", "--assignment", "dropout", "--gradescope", "results.json", cwd=tmp_path)
    assert r.returncode == 2 and "one submission" in r.stderr


def test_use_says_which_pieces_are_the_students(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(SOLUTIONS / "activations.py", work / "activations.py")
    (work / "conv2d.py").write_text("def conv2d_forward(*a):\n    raise NotImplementedError\n")
    r = run("use", "work", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "your relu (activations.py)" in r.stdout and "not used (not full marks yet): conv2d" in r.stdout
    r = run("use", "nowhere", "--", "train", cwd=tmp_path)
    assert r.returncode == 2 and "not a folder" in r.stderr
