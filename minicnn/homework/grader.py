"""Grading: run a submission's functions in the sandbox on every case of an assignment and score them.

``check(name, path)`` returns a ``Grade``: per case pass/fail and points,
and for the first failing case a reproduction (shapes, arguments, seed, the
worst element with its expected and actual values) and, where the failure
matches a classic mistake, a diagnosis in words. The grader never trusts the
child process: only the arrays it sends back are used, compared here with
answers computed here.
"""
import os

from . import sandbox
from .notebook import notebook_source
from .core import Assignment, Verdict
from .registry import get


class Grade:
    """The result of grading one submission of one assignment.

    ``score`` out of ``points``; ``cases`` a list of (name, points, earned,
    Verdict); ``problem``: what stopped the run early, if anything;
    ``output``: the tail of what the submission printed; ``seconds``.
    """

    def __init__(self, assignment, path, cases, problem=None, output="", seconds=0.0):
        self.assignment, self.path, self.cases = assignment, path, cases
        self.problem, self.output, self.seconds = problem, output, seconds
        self.points = assignment.points
        self.score = round(sum(earned for _, _, earned, _ in cases), 2)

    @property
    def full_marks(self):
        return all(v.ok for _, _, _, v in self.cases) and self.problem is None

    def first_failure(self):
        """(case name, Verdict, Case) of the first failing case, or None."""
        for name, _, _, verdict in self.cases:
            if not verdict.ok:
                return name, verdict
        return None

    def summary(self):
        """One line: the first failure and its diagnosis (for a CSV cell)."""
        fail = self.first_failure()
        if fail is None:
            return self.problem or ""
        name, v = fail
        return f"{name}: {v.message}" + (f" -- {v.diagnosis}" if v.diagnosis else "")

    def report(self, case_objects=None):
        """The text ``minicnn homework check`` prints."""
        a = self.assignment
        lines = [f"{a.name}: {a.goal}  ({os.path.basename(self.path)})"]
        for name, pts, earned, v in self.cases:
            lines.append(f"  {'PASS' if v.ok else 'FAIL'}  {earned:5.2f}/{pts:5.2f}  {name}")
        fail = self.first_failure()
        if fail:
            name, v = fail
            lines += ["", f"first failure: {name}", f"  {v.message}"]
            case = next((c for c in case_objects or () if c.name == name), None)
            if case is not None:
                lines.append(f"  reproduce: {case.reproduction()}")
            if v.diagnosis:
                lines.append(f"  diagnosis: {v.diagnosis}")
        if self.problem:
            lines += ["", f"the run: {self.problem}"]
        if self.output.strip():
            lines += ["", "the submission printed (last lines):"]
            lines += ["  " + (line if len(line) < 200 else line[:200] + " ...")
                      for line in self.output.strip().splitlines()[-8:]]
        lines += ["", f"score: {self.score:g} / {self.points:g}" + ("  (full marks)" if self.full_marks else ""),
                  f"graded in {self.seconds:.1f} s; lesson: {a.lecture} ({a.docs})"]
        return "\n".join(lines)


def find_submission(path, name):
    """The file to grade: ``path`` itself, or in a folder NAME.py / NAME.ipynb (or its only .py / .ipynb)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no submission at {path}")
    for candidate in (f"{name}.py", f"{name}.ipynb"):
        if os.path.isfile(os.path.join(path, candidate)):
            return os.path.join(path, candidate)
    files = sorted(f for f in os.listdir(path) if f.endswith((".py", ".ipynb")) and not f.startswith("."))
    if len(files) == 1:
        return os.path.join(path, files[0])
    raise FileNotFoundError(f"no {name}.py or {name}.ipynb in {path}" + (f" (found {', '.join(files)})"
                                                                            if files else ""))


def read_submission(path):
    """The Python source to run: a .py file as it is, a notebook's imports and definitions only."""
    if path.endswith(".ipynb"):
        return notebook_source(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def check(name, path, time_limit=None, memory_mb=2048, return_cases=False):
    """Grade the submission at ``path`` (file or folder) for assignment ``name``; returns a ``Grade``.

    ``name`` may also be an ``Assignment`` that is not in the registry (a
    teacher's new one). ``return_cases``: return (grade, cases), the cases
    being what ``Grade.report`` needs for its reproduction line.
    """
    assignment = name if isinstance(name, Assignment) else get(name)
    path = find_submission(path, assignment.name)
    cases = assignment.cases()
    inputs = {f"{k}/{n}": a for k, c in enumerate(cases) for n, a in c.inputs.items()}
    plan = {"cases": [c.plan() for c in cases], "needs_minicnn": assignment.needs_minicnn}
    limit = time_limit or assignment.time_limit
    result = sandbox.run(read_submission(path), plan, inputs, time_limit=limit, memory_mb=memory_mb,
                         filename=os.path.basename(path))
    graded = []
    for case, got in zip(cases, result.cases):
        if result.tampered:
            verdict = Verdict(False, result.tampered, "the submission tried to change the grader's files")
        elif got is None:
            verdict = Verdict(False, f"did not finish: {result.problem or 'the process ended before this case'}")
        else:
            verdict = case.judge(*got)
        graded.append((case.name, case.points, case.points if verdict.ok else 0.0, verdict))
    grade = Grade(assignment, path, graded, result.tampered or result.problem, result.output, result.seconds)
    return (grade, cases) if return_cases else grade


def submissions_in(folder, name):
    """{student: path} for a folder of submissions: one file or one folder per student.

    A folder that itself holds NAME.py or NAME.ipynb is one submission
    (Gradescope's /autograder/submission); its student is the folder's name.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    if any(os.path.isfile(os.path.join(folder, f"{name}{ext}")) for ext in (".py", ".ipynb")):
        return {os.path.basename(os.path.abspath(folder)): folder}
    found = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if entry.startswith((".", "_")):
            continue
        if os.path.isdir(path) or entry.endswith((".py", ".ipynb")):
            found[os.path.splitext(entry)[0] if os.path.isfile(path) else entry] = path
    return found


def grade_folder(folder, name, jobs=None, time_limit=None, memory_mb=2048):
    """Grade every submission in ``folder`` for assignment ``name``, ``jobs`` at a time (default: the cores).

    Returns {student: Grade, or the error text when no submission file was found}.
    The submissions run in their own processes, so they use the cores in parallel;
    the test cases are drawn once, here, before any starts.
    """
    from concurrent.futures import ThreadPoolExecutor

    subs = submissions_in(folder, name)
    get(name).cases()

    def one(item):
        student, path = item
        try:
            return student, check(name, path, time_limit=time_limit, memory_mb=memory_mb)
        except FileNotFoundError as e:
            return student, str(e)

    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return dict(pool.map(one, subs.items()))


def write_csv(grades, path):
    """One row per student: student, file, score, points, full_marks, seconds, first_failure."""
    import csv
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "file", "score", "points", "full_marks", "seconds", "first_failure"])
        for student, g in grades.items():
            if isinstance(g, str):
                w.writerow([student, "", 0, "", False, "", g])
            else:
                w.writerow([student, os.path.basename(g.path), g.score, g.points, g.full_marks,
                            f"{g.seconds:.2f}", g.summary()])


def gradescope_json(grade):
    """Gradescope's results.json for one graded submission: the score and one test per case."""
    tests = []
    for name, pts, earned, v in grade.cases:
        output = "" if v.ok else v.message + (f"\ndiagnosis: {v.diagnosis}" if v.diagnosis else "")
        tests.append({"name": name, "score": round(earned, 4), "max_score": round(pts, 4), "output": output})
    return {"score": grade.score, "output": grade.report(grade.assignment.cases()),
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}
