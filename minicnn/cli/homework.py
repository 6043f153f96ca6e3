"""``minicnn homework``: list the assignments, start one, check it, grade a folder, use your own ops.

The work is ``minicnn.homework``; this module only reads the command line
and prints.
"""
import argparse
import json
import os
import sys

from .common import CLIError, HelpFormatter, output_folder, positive_int, positive_number

EXAMPLES = """\
examples:
  minicnn homework list                              # the assignments in lesson order, goals and points
  minicnn homework start conv2d                      # writes ./conv2d.py (never overwrites)
  minicnn homework start conv2d --notebook           # writes ./conv2d.ipynb (Jupyter, Colab)
  minicnn homework check conv2d                      # grades ./conv2d.py (or .ipynb); exit 0 at full marks
  minicnn homework grade subs/ --assignment conv2d --csv grades.csv
  minicnn homework grade /autograder/submission --assignment conv2d \\
      --gradescope /autograder/results/results.json   # Gradescope's autograder
  minicnn homework use mywork/ -- train --model simple_cnn --epochs 1   # train on your own ops

Grading runs the submission in a separate process with a time limit and a
memory limit; the same submission always gets the same grade. `use` runs
your code in minicnn's own process: that is how it trains the network.
"""


def add_parser(sub):
    p = sub.add_parser("homework", help="assignments that rebuild minicnn: start, check, grade, use",
                       description="Assignments that rebuild minicnn piece by piece: list them, start one, "
                                   "check it, grade a folder of submissions, use your own ops in minicnn.",
                       epilog=EXAMPLES, formatter_class=HelpFormatter)
    verbs = p.add_subparsers(dest="homework_command", metavar="ACTION")
    verbs.add_parser("list", help="the assignments in lesson order")
    s = verbs.add_parser("start", help="write an assignment's skeleton (never overwrites)",
                         formatter_class=HelpFormatter)
    s.add_argument("name", help="the assignment (minicnn homework list)")
    s.add_argument("--dir", default=".", help="folder to write it into")
    s.add_argument("--notebook", action="store_true", help="write a Jupyter notebook (.ipynb) instead of .py")
    c = verbs.add_parser("check", help="grade one assignment: per case pass/fail, a diagnosis, the score",
                         formatter_class=HelpFormatter)
    c.add_argument("name", help="the assignment (minicnn homework list)")
    c.add_argument("file", nargs="?", help="your file (default: NAME.py or NAME.ipynb here)")
    limits(c)
    g = verbs.add_parser("grade", help="grade a folder of submissions (one file or folder per student)",
                         formatter_class=HelpFormatter)
    g.add_argument("folder")
    g.add_argument("--assignment", required=True)
    g.add_argument("--csv", help="write the scores and first failures to this CSV file")
    g.add_argument("--gradescope", metavar="RESULTS_JSON", help="write Gradescope's results.json (one submission)")
    g.add_argument("--jobs", type=positive_int, default=None, help="submissions graded at once (default: the cores)")
    limits(g)
    u = verbs.add_parser("use", help="run a minicnn command with your own ops in place of the package's")
    u.add_argument("folder", help="your folder of assignments (conv2d.py, max_pool.py, ...)")
    u.add_argument("--any", action="store_true", help="use files that do not have full marks yet too")
    u.add_argument("command", nargs=argparse.REMAINDER, help="the minicnn command to run, after --")
    p.set_defaults(func=run)
    p.set_defaults(parser=p)


def limits(p):
    p.add_argument("--time-limit", type=positive_number, default=None,
                   help="seconds a submission may run (default: the assignment's, 60 s; loops may need more)")
    p.add_argument("--memory-mb", type=positive_int, default=2048, help="memory a submission may use, in MB")


def run(args):
    from .. import homework
    action = args.homework_command
    if action is None:
        args.parser.print_help()
        return 0
    if action == "list":
        for i, a in enumerate(homework.ASSIGNMENTS.values(), 1):
            print(f"{i:2d}. {a.name:12s} {a.points:3g} pts  {a.goal}")
            print(f"    {'':12s}          lesson: {a.lecture} ({a.docs})")
        return 0
    name = getattr(args, "name", None) or getattr(args, "assignment", None)
    if name is not None and name not in homework.ASSIGNMENTS:
        raise CLIError(f"no assignment {name!r}; the assignments are: {', '.join(homework.ASSIGNMENTS)}")
    if action == "start":
        output_folder(args.dir, "--dir")
        try:
            path = homework.start(name, args.dir, notebook=args.notebook)
        except FileExistsError as e:
            raise CLIError(str(e)) from None
        except OSError as e:
            raise CLIError(f"--dir {args.dir}: cannot write there ({e.strerror or e})") from None
        print(f"wrote {path}: fill in the TODOs, then run: minicnn homework check {name}"
              + (f" {path}" if args.dir != "." or args.notebook else ""))
        return 0
    if action == "check":
        path = args.file or "."
        try:
            grade, cases = homework.check(name, path, time_limit=args.time_limit, memory_mb=args.memory_mb,
                                          return_cases=True)
        except FileNotFoundError as e:
            raise CLIError(f"{e}; start with: minicnn homework start {name}") from None
        print(grade.report(cases))
        return 0 if grade.full_marks else 1
    if action == "grade":
        return grade_folder(args, homework)
    if action == "use":
        return use(args, homework)
    raise CLIError(f"unknown action {action!r}")


def grade_folder(args, homework):
    from ..homework.grader import gradescope_json, grade_folder, write_csv
    if not os.path.isdir(args.folder):
        raise CLIError(f"{args.folder}: not a folder of submissions")
    for option, path in (("--csv", args.csv), ("--gradescope", args.gradescope)):
        if path:
            if os.path.isdir(path):
                raise CLIError(f"{option} {path}: is a folder; give a file name")
            output_folder(os.path.dirname(os.path.abspath(path)), option)
    grades = grade_folder(args.folder, args.assignment, jobs=args.jobs, time_limit=args.time_limit,
                          memory_mb=args.memory_mb)
    if not grades:
        raise CLIError(f"{args.folder}: no submissions (.py, .ipynb or folders) found")
    if args.gradescope and len(grades) != 1:
        raise CLIError(f"--gradescope grades one submission (Gradescope runs one student at a time); "
                       f"{args.folder} holds {len(grades)}")
    for student, g in grades.items():
        if isinstance(g, str):
            print(f"{student:20s}   0 / ?   {g}")
        else:
            print(f"{student:20s} {g.score:6g} / {g.points:g}  {g.summary()[:100]}")
    if args.csv:
        write_csv(grades, args.csv)
        print(f"wrote {args.csv}")
    if args.gradescope:
        (g,) = grades.values()
        result = gradescope_json(g) if not isinstance(g, str) else {"score": 0, "output": g, "tests": []}
        with open(args.gradescope, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.gradescope}")
    return 0


def use(args, homework):
    from .. import cli
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not os.path.isdir(args.folder):
        raise CLIError(f"{args.folder}: not a folder (give the folder that holds your conv2d.py, max_pool.py, ...)")
    if command[:1] == ["homework"]:
        raise CLIError("homework use runs another minicnn command (train, explain, ...), not homework")
    with homework.use(args.folder, require_full_marks=not args.any) as used:
        if not command:
            return 0
        sys.stdout.flush()
        code = cli.main(command)
    return code
