"""What the doctor says: one ``CheckResult`` per check, gathered in a ``Report``.

Each result has a status (``OK``, ``WARN`` or ``FAIL``), the number it
measured (``value``, and ``measured``: the same as a short sentence), what
the number means and what to try, in the words of the lectures'
debugging checklist. A ``Report`` prints as one line per check (plus the
advice of the checks that did not pass), and converts to a dict, JSON or
markdown; ``save(folder)`` writes ``report.md`` and ``report.json``.
"""
import json
import math
import os

import numpy as np

__all__ = ["OK", "WARN", "FAIL", "STATUSES", "CheckResult", "Report"]

OK, WARN, FAIL = "OK", "WARN", "FAIL"
STATUSES = (OK, WARN, FAIL)


def _plain(v):
    """``v`` with NumPy scalars/arrays and tuples made JSON-friendly (NaN and inf become strings)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else str(v)
    return v


class CheckResult:
    """The outcome of one check.

    Attributes:
        name: the check's short name (``'data'``, ``'loss_at_init'``, ...).
        title: the checklist item it serves.
        status: ``'OK'``, ``'WARN'`` or ``'FAIL'``.
        value: the main number measured (a float, or None when there is none).
        measured: the measurement as a short sentence.
        meaning: what the number means.
        advice: what to try (empty when all is well).
        details: a dict of everything else measured (per layer, per channel, ...).
        figures: paths of the figures the check drew (when an output folder was given).
    """

    def __init__(self, name, title, status, value, measured, meaning, advice="", details=None, figures=None):
        if status not in STATUSES:
            raise ValueError(f"CheckResult: status must be one of {STATUSES}, got {status!r}")
        self.name, self.title, self.status = name, title, status
        self.value, self.measured, self.meaning, self.advice = value, measured, meaning, advice
        self.details = details or {}
        self.figures = list(figures or [])

    @property
    def ok(self):
        """True unless the status is FAIL (a WARN still passes)."""
        return self.status != FAIL

    def to_dict(self):
        return _plain({"name": self.name, "title": self.title, "status": self.status, "value": self.value,
                       "measured": self.measured, "meaning": self.meaning, "advice": self.advice,
                       "details": self.details, "figures": self.figures})

    def line(self):
        """``[ OK ] name  measured`` on one line."""
        return f"[{self.status:^4}] {self.name:<18} {self.measured}"

    def __str__(self):
        lines = [self.line(), f"{'':7}{self.meaning}"]
        if self.advice and self.status != OK:
            lines.append(f"{'':7}try: {self.advice}")
        return "\n".join(lines)

    def __repr__(self):
        return f"CheckResult({self.name!r}, {self.status}, value={self.value!r})"


class Report:
    """All the checks of one ``examine`` run, in order.

    ``report.ok`` is True when no check FAILs; ``report['data']`` is one
    result; ``report.statuses`` maps name -> status; ``str(report)`` is the
    printed report; ``to_dict()``, ``to_json()``, ``to_markdown()`` and
    ``save(folder)`` write it out.
    """

    def __init__(self, results, context=None):
        self.results = list(results)
        self.context = dict(context or {})

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def __getitem__(self, name):
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"Report: no check named {name!r}; checks: {', '.join(r.name for r in self.results)}")

    def __contains__(self, name):
        return any(r.name == name for r in self.results)

    @property
    def ok(self):
        """True when no check has status FAIL."""
        return all(r.ok for r in self.results)

    @property
    def statuses(self):
        return {r.name: r.status for r in self.results}

    def failed(self):
        """Names of the checks that FAIL."""
        return [r.name for r in self.results if r.status == FAIL]

    def warned(self):
        return [r.name for r in self.results if r.status == WARN]

    def headline(self):
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        verdict = "nothing failed" if self.ok else f"FAILED: {', '.join(self.failed())}"
        return (f"minicnn doctor: {len(self.results)} checks, {counts[OK]} OK, {counts[WARN]} WARN, "
                f"{counts[FAIL]} FAIL ({verdict})")

    def __str__(self):
        return "\n".join([self.headline()] + [str(r) for r in self.results])

    def __repr__(self):
        return f"Report({self.statuses})"

    def to_dict(self):
        return _plain({"ok": self.ok, "statuses": self.statuses, "context": self.context,
                       "checks": [r.to_dict() for r in self.results]})

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self):
        lines = ["# minicnn doctor report", "", self.headline(), ""]
        if self.context:
            lines += ["| setting | value |", "|---|---|"]
            lines += [f"| {k} | {_plain(v)} |" for k, v in self.context.items()]
            lines.append("")
        lines += ["| check | status | measured |", "|---|---|---|"]
        lines += [f"| {r.name} | **{r.status}** | {r.measured} |" for r in self.results]
        for r in self.results:
            lines += ["", f"## {r.name}: {r.status}", "", f"*{r.title}*", "", f"- measured: {r.measured}",
                      f"- what it means: {r.meaning}"]
            if r.advice:
                lines.append(f"- what to try: {r.advice}")
            for fig in r.figures:
                lines.append(f"\n![{r.name}]({os.path.basename(fig)})")
        return "\n".join(lines) + "\n"

    def save(self, folder):
        """Write ``report.md`` and ``report.json`` into ``folder`` (created); returns their paths."""
        os.makedirs(folder, exist_ok=True)
        paths = (os.path.join(folder, "report.md"), os.path.join(folder, "report.json"))
        for path, text in zip(paths, (self.to_markdown(), self.to_json())):
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        return paths
