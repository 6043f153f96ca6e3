"""Student code runs in a separate process: nothing it does raises its grade or takes the grader down."""
import pathlib

import pytest

from minicnn import homework
from minicnn.homework import sandbox

from homework_catalogue import SOLUTIONS

SOLUTION = (SOLUTIONS / "conv2d.py").read_text()
PACKAGE = pathlib.Path(homework.__file__).resolve().parent.parent.parent


def grade(tmp_path, source, name="conv2d", **kw):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return homework.check(name, str(path), **kw)


def first_in_backward(code):
    """The solution with ``code`` run at the start of conv2d_backward on the cases with stride (3, 3)."""
    return SOLUTION.replace("    (N, C, H, W), w, cols, stride, padding, dilation = cache\n",
                            "    (N, C, H, W), w, cols, stride, padding, dilation = cache\n"
                            f"    if tuple(stride) == (3, 3):\n        {code}\n")


def test_an_endless_loop_is_stopped_at_the_time_limit(tmp_path):
    g = grade(tmp_path, first_in_backward("while True: pass"), time_limit=4)
    assert "time limit of 4 s" in g.report()
    assert 0 < g.score < g.points            # the cases before the loop kept their points
    assert g.seconds < 15


def test_an_abort_is_reported_as_a_crash(tmp_path):
    g = grade(tmp_path, first_in_backward("import os; os.abort()"))
    assert "crashed (an abort" in g.report() and not g.full_marks


def test_a_segfault_is_reported_as_a_crash(tmp_path):
    g = grade(tmp_path, first_in_backward("import faulthandler; faulthandler._sigsegv()"))
    assert "segmentation fault" in g.report() and not g.full_marks


def test_ctypes_cannot_load_libraries(tmp_path):
    g = grade(tmp_path, first_in_backward("import ctypes; ctypes.CDLL(None).unlink(b'x')"))
    assert "refused ctypes.dlopen" in g.report() and not g.full_marks


def test_ctypes_cannot_reach_libc_through_the_loaded_python(tmp_path):
    g = grade(tmp_path, first_in_backward("import ctypes; ctypes.pythonapi.unlink(b'x')"))
    assert "refused ctypes.dlsym" in g.report() and not g.full_marks


def test_sys_exit_mid_grading_fails_the_rest(tmp_path):
    g = grade(tmp_path, first_in_backward("import sys; sys.exit(0)"))
    assert "sys.exit(0)" in g.report()
    assert 0 < g.score < g.points


def test_os_exit_zero_mid_grading_is_not_full_marks(tmp_path):
    g = grade(tmp_path, first_in_backward("import os; os._exit(0)"))
    assert "did not finish" in g.report()
    assert 0 < g.score < g.points


def test_a_flood_of_output_is_stopped(tmp_path):
    g = grade(tmp_path, first_in_backward("import sys\n        while True: sys.stdout.write('spam ' * 100000)"))
    assert f"more than {sandbox.OUTPUT_LIMIT // 2 ** 20} MB of output" in g.report()
    assert not g.full_marks


def test_a_memory_hog_gets_a_memory_error(tmp_path):
    g = grade(tmp_path, first_in_backward("import numpy; numpy.ones(2 ** 31)"), memory_mb=1024)
    assert "MemoryError" in g.report() and not g.full_marks


def test_writing_into_the_package_is_refused_and_changes_nothing(tmp_path):
    before = sandbox.package_fingerprint()
    target = PACKAGE / "minicnn" / "reference.py"
    text = target.read_text()
    attack = (f"open({str(target)!r}, 'w').write('def conv2d(*a, **k): return 0')\n"
              f"import os\nos.remove({str(PACKAGE / 'minicnn' / 'homework' / 'core.py')!r})\n") + SOLUTION
    g = grade(tmp_path, attack)
    assert g.score == 0 and "refused to write" in g.report()
    assert target.read_text() == text and sandbox.package_fingerprint() == before


def test_patching_the_reference_in_its_own_process_is_refused(tmp_path):
    attack = SOLUTION + ("\nimport minicnn.reference\nminicnn.reference.conv2d = lambda *a, **k: 0\n")
    g = grade(tmp_path, attack)
    assert g.score == 0 and "it imports minicnn" in g.report()


def test_importing_the_package_solution_is_refused(tmp_path):
    cheat = ("from minicnn.functional import conv2d\n"
             "def conv2d_forward(x, w, b, s, p, d):\n    return conv2d(x, w, b, s, p, d).data, None\n")
    g = grade(tmp_path, cheat)
    assert g.score == 0 and "it imports minicnn" in g.report()


def test_starting_processes_is_refused(tmp_path):
    g = grade(tmp_path, "import subprocess\nsubprocess.run(['true'])\n" + SOLUTION)
    assert g.score == 0 and "refused subprocess.Popen" in g.report()


def test_the_grader_still_works_after_all_that(tmp_path):
    assert grade(tmp_path, SOLUTION).full_marks


def test_results_are_never_unpickled(tmp_path):
    """A submission that returns Python objects gets no points; the grader loads .npz with allow_pickle=False."""
    g = grade(tmp_path, SOLUTION.replace("    return dx, dw, db", "    return dx, dw, [object()]"))
    assert not g.full_marks and "db is missing or is not a numeric array" in g.report()


@pytest.mark.parametrize("jobs", [2])
def test_a_folder_is_graded_in_parallel(tmp_path, jobs):
    from minicnn.homework.grader import grade_folder
    for i in range(3):
        (tmp_path / f"student{i}.py").write_text(SOLUTION if i else "while True: pass\n")
    grades = grade_folder(str(tmp_path), "conv2d", jobs=jobs, time_limit=5)
    assert grades["student1"].full_marks and grades["student2"].full_marks
    assert grades["student0"].score == 0 and "time limit" in grades["student0"].report()
