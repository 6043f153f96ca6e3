"""The grader never lies: solutions and correct alternatives score full marks, every catalogued mistake less."""
import collections

import numpy as np
import pytest

from minicnn import homework
from minicnn.homework.grader import grade_folder

from homework_catalogue import CORRECT, MISTAKES, SOLUTIONS, mutate

BY_ASSIGNMENT = collections.defaultdict(list)
for _entry in MISTAKES:
    BY_ASSIGNMENT[_entry[0]].append(_entry)


def test_catalogue_has_at_least_40_mistakes_across_the_assignments():
    assert len(MISTAKES) >= 40
    assert len({m[1] for m in MISTAKES}) == len(MISTAKES)
    assert len(BY_ASSIGNMENT) >= 7


@pytest.mark.parametrize("name", list(homework.ASSIGNMENTS))
def test_the_package_solution_scores_full_marks(name):
    grade = homework.check(name, str(SOLUTIONS / f"{name}.py"))
    assert grade.full_marks, grade.report()
    assert grade.score == pytest.approx(grade.points)


@pytest.mark.parametrize("name", list(homework.ASSIGNMENTS))
def test_the_skeleton_scores_zero(name, tmp_path):
    path = homework.start(name, str(tmp_path))
    grade = homework.check(name, path)
    assert grade.score == 0 and not grade.full_marks
    assert "NotImplementedError" in grade.report()


@pytest.mark.parametrize("name", sorted(BY_ASSIGNMENT))
def test_every_catalogued_mistake_scores_below_full_marks_with_its_diagnosis(name, tmp_path):
    for _, ident, edits, _ in BY_ASSIGNMENT[name]:
        (tmp_path / f"{ident}.py").write_text(mutate(name, edits))
    grades = grade_folder(str(tmp_path), name, jobs=2)
    for _, ident, _, diagnosis in BY_ASSIGNMENT[name]:
        g = grades[ident]
        assert not g.full_marks and g.score < g.points, f"{name}/{ident} scored full marks"
        if diagnosis:
            found = [v.diagnosis or "" for _, _, _, v in g.cases if not v.ok]
            assert any(diagnosis in d for d in found), f"{name}/{ident}: no diagnosis {diagnosis!r} in\n{g.report()}"


@pytest.mark.parametrize("name, ident, edits", CORRECT, ids=[f"{c[0]}-{c[1]}" for c in CORRECT])
def test_correct_alternatives_score_full_marks(name, ident, edits, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text(mutate(name, edits))
    grade = homework.check(name, str(path))
    assert grade.full_marks, grade.report()


def test_grading_is_deterministic():
    a = homework.get("max_pool").make_cases()
    b = homework.get("max_pool").make_cases()
    for x, y in zip(a, b):
        assert x.name == y.name
        for k in x.inputs:
            np.testing.assert_array_equal(x.inputs[k], y.inputs[k])


def test_the_report_has_a_reproduction_and_a_diagnosis(tmp_path):
    path = tmp_path / "conv2d.py"
    path.write_text(mutate("conv2d", [("db = G.sum(axis=0)", "db = dy.sum(axis=(2, 3))")]))
    grade, cases = homework.check("conv2d", str(path), return_cases=True)
    text = grade.report(cases)
    for phrase in ("FAIL", "first failure", "db has shape", "reproduce: inputs: x (2, 3, 6, 6)", "seed",
                   "diagnosis: db is not summed over the batch", "score: 0 / 20"):
        assert phrase in text, text


def test_a_wrong_element_is_reported_with_both_values(tmp_path):
    path = tmp_path / "batchnorm.py"
    path.write_text(mutate("batchnorm", [("dx = a * (dy - dbeta.reshape(shape) / M - x_hat * dgamma.reshape(shape) / M)",
                                          "dx = a * dy")]))
    grade = homework.check("batchnorm", str(path))
    name, verdict = grade.first_failure()
    assert "dx is wrong at" in verdict.message and "expected" in verdict.message and "got" in verdict.message
    assert 0 < grade.score < grade.points         # the eval-mode cases are right


def test_a_notebook_is_graded_from_its_definitions_only(tmp_path):
    nb = tmp_path / "conv2d.ipynb"
    homework.write_notebook(str(nb), (SOLUTIONS / "conv2d.py").read_text()
                            + "\nif __name__ == '__main__':\n    raise SystemExit('never run')\n")
    import json
    data = json.loads(nb.read_text())
    data["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                          "source": ["%matplotlib inline\n", "import os\n", "os._exit(3)   # a cell that is not run\n"]})
    nb.write_text(json.dumps(data))
    source = homework.notebook_source(str(nb))
    assert "os._exit" not in source and "def conv2d_forward" in source
    assert homework.check("conv2d", str(nb)).full_marks


def test_start_writes_a_notebook_and_never_overwrites(tmp_path):
    path = homework.start("max_pool", str(tmp_path), notebook=True)
    assert path.endswith(".ipynb")
    import json
    cells = json.loads(open(path).read())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "max pooling" in "".join(cells[0]["source"])
    assert any("def max_pool_forward" in "".join(c["source"]) for c in cells)
    with pytest.raises(FileExistsError):
        homework.start("max_pool", str(tmp_path), notebook=True)
    with pytest.raises(ValueError, match="no assignment"):
        homework.start("nope", str(tmp_path))


def test_every_assignment_names_its_lesson_and_docs_page():
    import pathlib
    root = pathlib.Path(__file__).parent.parent
    assert len(homework.ASSIGNMENTS) >= 7
    for a in homework.ASSIGNMENTS.values():
        assert (root / a.docs).exists(), a.docs
        assert a.lecture and a.goal and a.points > 0
        for fn in a.functions:
            assert f"def {fn}(" in a.skeleton
        assert "NotImplementedError" in a.skeleton and "__main__" in a.skeleton
