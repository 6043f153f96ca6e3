"""minicnn.homework: assignments that rebuild minicnn, their grader, and the student's ops inside minicnn.

    minicnn homework list                       # the assignments in lesson order
    minicnn homework start conv2d               # writes conv2d.py, the skeleton (--notebook: conv2d.ipynb)
    minicnn homework check conv2d               # grades it: per case pass/fail, a diagnosis, the score
    minicnn homework grade subs/ --assignment conv2d --csv grades.csv [--gradescope results.json]
    minicnn homework use mywork/ -- train ...   # minicnn with the student's ops in place

In Python: ``ASSIGNMENTS``, ``start(name, folder)``, ``check(name, path)``
(a ``Grade``), ``grade_folder(folder, name)`` and ``use(folder)`` (a context
manager). Student code runs in a separate process with time and memory
limits when graded (``sandbox``); ``use`` runs it in this process, on
purpose: the student's own ops train the network.
"""
import os

from .core import Assignment, Case, call, matches  # noqa: F401
from .grader import Grade, check, find_submission, grade_folder  # noqa: F401
from .notebook import notebook_source, write_notebook  # noqa: F401
from .registry import ASSIGNMENTS, get
from .use import use

__all__ = ["ASSIGNMENTS", "Assignment", "Case", "call", "matches", "get", "start", "check", "grade_folder", "use",
           "Grade", "write_notebook",
           "notebook_source"]


def start(name, folder=".", notebook=False):
    """Write assignment ``name``'s skeleton into ``folder`` as NAME.py (NAME.ipynb with ``notebook``).

    Never overwrites: a FileExistsError names the file that is already there.
    Returns the path written.
    """
    assignment = get(name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.ipynb" if notebook else f"{name}.py")
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; it was left as it is (delete or rename it to start again)")
    if notebook:
        write_notebook(path, assignment.skeleton)
    else:
        with open(path, "x") as f:
            f.write(assignment.skeleton)
    return path
