"""The grader's child process: runs a submission's functions on the grader's inputs and saves what they return.

Run as a script (``python _child.py WORKDIR``), never imported by minicnn. It
knows no expected answer: it loads ``WORKDIR/plan.json`` (the calls of each
test case, in order) and ``WORKDIR/inputs.npz``, executes the submission's
source (``WORKDIR/submission.py``: only definitions and imports for a
notebook), runs each case and writes ``WORKDIR/out/case_K.npz`` (the named
results and the inputs as they are after the calls) and ``case_K.json``
(ok, or the error). The grader, in its own process, compares them with the
expected answers. Before the submission runs, an audit hook refuses every
write, delete, rename, process start or library load outside WORKDIR, and
for op assignments ``import minicnn`` is refused (the package's own
implementation is the solution).
"""
import json
import os
import sys
import traceback

import numpy as np

WORKDIR = os.path.realpath(sys.argv[1])
OUT = os.path.join(WORKDIR, "out")
BLOCKED = ("os.remove", "os.rename", "os.rmdir", "os.chmod", "os.chown", "os.truncate", "os.link",
           "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile")
MODELS = None
NO_PROCESSES = ("subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                "os.forkpty", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym", "pty.spawn")


def inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return p == WORKDIR or p.startswith(WORKDIR + os.sep) or p == os.devnull


def audit(event, args):
    if event == "open" and args and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "r", args[2] or 0
        writes = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        if writes and not inside(args[0]):
            raise PermissionError(f"the grader's sandbox refused to write {args[0]!r} (outside the sandbox folder)")
    elif event in BLOCKED or event == "os.mkdir":
        if not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
            raise PermissionError(f"the grader's sandbox refused {event}{args[:2]!r} (outside the sandbox folder)")
    elif event in NO_PROCESSES:
        raise PermissionError(f"the grader's sandbox refused {event}: submissions may not start processes, "
                              f"send signals or load libraries")


def value(arg, ns):
    """A plan argument: "$name" is a namespace entry, {"rng": seed} a NumPy Generator, else the literal."""
    if isinstance(arg, str) and arg.startswith("$"):
        return ns[arg[1:]]
    if isinstance(arg, dict) and set(arg) == {"rng"}:
        return np.random.default_rng(arg["rng"])
    if isinstance(arg, dict) and set(arg) == {"model"}:
        return MODELS(*arg["model"])         # the analysis assignments' fixed model
    if isinstance(arg, list):
        return tuple(value(a, ns) for a in arg)
    return arg


def save(k, status, ns, names):
    arrays = {}
    for name in names:
        if name in ns:
            try:
                a = np.asarray(ns[name])
                if a.dtype.kind in "fiub" and a.dtype.kind != "O":
                    arrays[name] = a
                else:
                    status.setdefault("not_arrays", []).append(f"{name}: {type(ns[name]).__name__}")
            except Exception as e:  # noqa: BLE001 (whatever the submission returned)
                status.setdefault("not_arrays", []).append(f"{name}: {type(e).__name__}")
    np.savez(os.path.join(OUT, f"case_{k}.npz"), **arrays)
    with open(os.path.join(OUT, f"case_{k}.json"), "w") as f:
        json.dump(status, f)


def main():
    with open(os.path.join(WORKDIR, "plan.json")) as f:
        plan = json.load(f)
    inputs = dict(np.load(os.path.join(WORKDIR, "inputs.npz"), allow_pickle=False))
    with open(os.path.join(WORKDIR, "submission.py")) as f:
        source = f.read()
    os.makedirs(OUT, exist_ok=True)
    os.chdir(os.path.join(WORKDIR, "tmp"))
    if plan.get("needs_minicnn"):   # analysis assignments work on the package's own models
        global MODELS
        from minicnn.homework.models import build_model
        MODELS = build_model
    sys.addaudithook(audit)
    if not plan.get("needs_minicnn"):
        for name in [m for m in sys.modules if m == "minicnn" or m.startswith("minicnn.")]:
            del sys.modules[name]
        sys.modules["minicnn"] = None     # op assignments: write it, do not import it
    module = {"__name__": "submission", "__file__": "submission.py"}
    try:
        exec(compile(source, plan.get("filename", "submission.py"), "exec"), module)
    except BaseException as e:  # noqa: BLE001
        why = f"{type(e).__name__}: {e}"
        if isinstance(e, ImportError) and "minicnn" in str(e):
            why = "it imports minicnn; this assignment is written with NumPy alone (the package is the solution)"
        for k in range(len(plan["cases"])):
            save(k, {"error": f"loading the submission failed: {why}",
                     "traceback": traceback.format_exc(limit=-3)}, {}, [])
        return
    for k, case in enumerate(plan["cases"]):
        ns = {name[len(f"{k}/"):]: a for name, a in inputs.items() if name.startswith(f"{k}/")}
        status = {}
        step = None
        try:
            for step in case["steps"]:
                fn = module.get(step["call"])
                if not callable(fn):
                    raise NameError(f"the submission defines no function {step['call']!r}")
                result = fn(*[value(a, ns) for a in step["args"]])
                outs = step["out"]
                if len(outs) == 1:
                    ns[outs[0]] = result
                else:
                    if not isinstance(result, (tuple, list)) or len(result) != len(outs):
                        raise TypeError(f"{step['call']} must return {len(outs)} values "
                                        f"({', '.join(outs)}), got {type(result).__name__}"
                                        + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
                    ns.update(zip(outs, result))
        except SystemExit as e:
            status = {"error": f"the submission called sys.exit({e.code!r}) in {step and step['call']}",
                      "exit": True}
        except BaseException as e:  # noqa: BLE001
            status = {"error": f"{type(e).__name__} in {step and step['call']}: {e}",
                      "traceback": traceback.format_exc(limit=-4)}
        save(k, status, ns, case["save"])


if __name__ == "__main__":
    main()
