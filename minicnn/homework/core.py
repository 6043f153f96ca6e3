"""The pieces every assignment is made of: ``Assignment``, ``Case``, the comparisons and the diagnoses.

An assignment is a skeleton (the text a student starts from) plus test
cases. A ``Case`` names the calls the student's functions get (``steps``:
function, arguments, names of the results), the inputs (arrays drawn from a
seeded NumPy generator: the same submission always gets the same grade),
the expected results (computed here, in the grader's process, from
``minicnn.reference``'s loop definitions and the float64 gradient checker)
and ``judge``, which turns what came back into a verdict. ``diagnoses`` are
classic mistakes: each computes what that mistake would return, and if the
student's result matches it the verdict says so in words.
"""
import numpy as np


def call(fn, *args, out):
    """One step of a case: ``out = fn(*args)``; "$name" in args is an input or an earlier result."""
    return {"call": fn, "args": list(args), "out": list(out)}


class Verdict:
    """A case's outcome: ``ok``, ``message`` (what is wrong, with the worst element) and ``diagnosis``."""

    def __init__(self, ok, message="", diagnosis=None):
        self.ok, self.message, self.diagnosis = ok, message, diagnosis


class Case:
    """One graded test case.

    Args:
        name: what it tests, e.g. "stride 2, padding 1".
        points: its share of the assignment's points.
        steps: the calls (``call(...)``), run in order in the sandbox.
        inputs: dict of input arrays (names used as "$name" in steps).
        expected: dict name -> expected array, compared in order (forward results first).
        checks: extra ``fn(results, case) -> message or None`` for answers that are not one array
            (a statistic, a tie rule).
        diagnoses: list of (message, fn(results, case) -> bool): classic mistakes.
        args: the non-array arguments, for the reproduction printed with a failure.
        tol: (rtol, atol) relative to the expected array's largest magnitude.
        seed: the seed that drew the inputs.
        unchanged: the inputs the calls must not modify (default: all).
        keep: further results to send back (for ``checks``).
    """

    def __init__(self, name, points, steps, inputs, expected=None, checks=(), diagnoses=(), args=None,
                 tol=(1e-4, 1e-5), seed=None, unchanged=None, keep=()):
        self.name, self.points, self.steps, self.inputs = name, points, steps, inputs
        self.expected = expected or {}
        self.checks, self.diagnoses, self.args, self.tol, self.seed = list(checks), list(diagnoses), args, tol, seed
        self.unchanged = list(inputs) if unchanged is None else unchanged
        self.save = list(self.expected) + list(keep) + self.unchanged   # what the sandbox sends back

    def plan(self):
        return {"steps": self.steps, "save": sorted(set(self.save))}

    def reproduction(self):
        shapes = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in self.inputs.items())
        calls = "; ".join(f"{', '.join(s['out'])} = {s['call']}(...)" for s in self.steps)
        extra = "; " + ", ".join(f"{k}={v}" for k, v in self.args.items()) if self.args else ""
        return f"inputs: {shapes}{extra}; seed {self.seed}; calls: {calls}"

    def judge(self, status, results):
        """The verdict on what came back from the sandbox for this case (None: it never finished)."""
        if status.get("error"):      # diagnose by the first result that came back wrong before the error
            wrong = next((n for n, want in self.expected.items() if n in results
                          and compare(n, results[n], want, self.tol)), None)
            return Verdict(False, status["error"], self.diagnose(results, wrong))
        for name in self.unchanged:          # the submission must not write into its inputs
            if name in results and not same(results[name], self.inputs[name]):
                what = "the upstream gradient" if name.startswith("d") else f"its input {name!r}"
                return Verdict(False, f"{name} was modified in place",
                               f"the function modified {what} in place: work on a copy (or new arrays)")
        for name, want in self.expected.items():
            if name not in results:
                return Verdict(False, f"{name} is missing or is not a numeric array "
                                      f"({'; '.join(status.get('not_arrays', [])) or 'not returned'})",
                               self.diagnose(results, name))
            message = compare(name, results[name], want, self.tol)
            if message:
                return Verdict(False, message, self.diagnose(results, name))
        for check in self.checks:
            message = check(results, self)
            if message:
                return Verdict(False, message, self.diagnose(results))
        return Verdict(True)

    def diagnose(self, results, failing=None):
        """The first classic mistake whose rule fits (rules about another result than ``failing`` are skipped)."""
        for message, rule in self.diagnoses:
            key = getattr(rule, "key", None)
            if key is not None and failing is not None and key != failing:
                continue
            try:
                if rule(results, self):
                    return message
            except Exception:  # noqa: BLE001  (a rule that does not apply to this answer)
                continue
        return None


def same(a, b):
    """Equal shape and values (NaN equal to NaN)."""
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def close(actual, expected, tol=(1e-4, 1e-5)):
    """Whether actual matches expected within (rtol, atol * max(1, max|expected|)); shapes must agree."""
    actual = np.asarray(actual)
    if actual.shape != expected.shape or actual.dtype.kind not in "fiub":
        return False
    scale = max(1.0, float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)))
    return bool(np.allclose(actual.astype(np.float64), expected, rtol=tol[0], atol=tol[1] * scale,
                            equal_nan=True))


def compare(name, actual, expected, tol=(1e-4, 1e-5)):
    """None when ``actual`` matches, else a sentence: the shapes, or the worst element with both values."""
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return f"{name} has shape {actual.shape}, expected {expected.shape}"
    if close(actual, expected, tol):
        return None
    a = actual.astype(np.float64)
    err = np.abs(a - expected)
    err = np.where(np.isnan(err) & ~(np.isnan(a) & np.isnan(expected)), np.inf, np.nan_to_num(err, nan=0.0))
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else ()
    bad = int(np.sum(~np.isclose(a, expected, rtol=tol[0], atol=tol[1], equal_nan=True)))
    return (f"{name} is wrong at {bad} of {expected.size} elements; worst at index {tuple(int(i) for i in worst)}: "
            f"expected {expected[worst]:.6g}, got {a[worst]:.6g}")


def about(name, rule):
    """Mark ``rule`` as a diagnosis of result ``name``: it is only tried when ``name`` is the result that failed."""
    rule.key = name
    return rule


def matches(name, wrong):
    """A diagnosis rule: the student's ``name`` equals ``wrong(case)`` (what the mistake would return), which
    differs from the right answer."""
    def rule(results, case):
        bad = np.asarray(wrong(case), dtype=np.float64)
        right = case.expected.get(name)
        return close(results[name], bad) and not (right is not None and close(bad, right))
    return about(name, rule)


def transposed(name):
    """A diagnosis rule: the student's ``name`` is the expected array with its axes in another order."""
    def rule(results, case):
        want, got = case.expected[name], results[name]
        for perm in _permutations(want.ndim):
            if perm != tuple(range(want.ndim)) and close(got, want.transpose(perm)):
                return True
        return False
    return about(name, rule)


def _permutations(n):
    import itertools
    return list(itertools.permutations(range(n)))


def non_finite(name):
    """A diagnosis rule: ``name`` holds inf or NaN where the expected answer is finite."""
    def rule(results, case):
        return not np.all(np.isfinite(results[name])) and np.all(np.isfinite(case.expected[name]))
    return about(name, rule)


class Assignment:
    """One homework: its name, points, goal, lesson, skeleton and test cases.

    Args:
        name: the name students type (``minicnn homework start conv2d``).
        goal: one line.
        points: the total; the cases' points are scaled to it.
        docs: the docs page the lesson is in; lecture: the idea it teaches.
        functions: the names the student defines, in order.
        skeleton: the text of the skeleton file.
        cases: a function of no arguments returning the list of ``Case``s.
        needs_minicnn: the student works with minicnn's Tensors and models (analysis
            assignments); op assignments are written with NumPy alone.
        time_limit: seconds allowed to a submission (vectorised code needs a fraction).
        use: for ``homework use``: (functional op name, adapter building the op from the module).
    """

    def __init__(self, name, goal, points, docs, lecture, functions, skeleton, cases, needs_minicnn=False,
                 time_limit=60.0, use=()):
        self.name, self.goal, self.points, self.docs, self.lecture = name, goal, points, docs, lecture
        self.functions, self.skeleton, self.make_cases = functions, skeleton, cases
        self.needs_minicnn, self.time_limit, self.use = needs_minicnn, time_limit, tuple(use)

    def cases(self):
        """The test cases, their points scaled to the assignment's (drawn once per process: they never change)."""
        if getattr(self, "_cases", None) is None:
            cases = self.make_cases()
            total = sum(c.points for c in cases)
            for c in cases:
                c.points = c.points * self.points / total
            self._cases = cases
        return self._cases
