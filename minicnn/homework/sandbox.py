"""Run a submission in a separate process with a time limit and a memory limit.

The grader's process writes the inputs of every test case into a fresh
folder, starts ``_child.py`` there (a new session, resource limits set before
it starts: address space, output file size, CPU time) and, afterwards, reads
back the named results of each case from ``.npz`` files with
``allow_pickle=False``. The expected answers never leave the grader's
process, so nothing the submission does can change them; what the child
reports is only ever compared, never trusted. Whatever happens in the child
(an infinite loop, a crash, ``sys.exit``, a flood of output) becomes a
message in the grade.
"""
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_LIMIT = 16 * 2 ** 20          # bytes of output (stdout + stderr, and each file) the child may write


class SandboxResult:
    """What came back: ``cases[k]`` is (status dict, arrays dict) or None if case k never finished.

    ``problem`` says in words why the process ended early (time limit, memory,
    a crash, an exit, too much output), or is None; ``output`` is the tail
    of what the submission printed; ``seconds`` the wall time.
    """

    def __init__(self, cases, problem, output, seconds, tampered=None):
        self.cases, self.problem, self.output, self.seconds = cases, problem, output, seconds
        self.tampered = tampered


def package_fingerprint():
    """A digest of the size and modification time of every file of the minicnn package (tamper check)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            h.update(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _limits(memory_mb, cpu_seconds):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2 ** 20, memory_mb * 2 ** 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT, OUTPUT_LIMIT))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _tail(path, n=2000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return size, f.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""


def run(source, plan, inputs, time_limit=60.0, memory_mb=2048, filename="submission.py"):
    """Run ``plan`` (see ``_child.py``) on ``source`` in a child process; returns a ``SandboxResult``."""
    with tempfile.TemporaryDirectory(prefix="minicnn-grade-") as work:
        os.makedirs(os.path.join(work, "tmp"))
        with open(os.path.join(work, "submission.py"), "w") as f:
            f.write(source)
        with open(os.path.join(work, "plan.json"), "w") as f:
            json.dump(dict(plan, filename=filename), f)
        np.savez(os.path.join(work, "inputs.npz"), **inputs)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MINICNN"))}
        env.update(PYTHONPATH=os.path.dirname(PACKAGE), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", HOME=work)
        before = package_fingerprint()
        log = os.path.join(work, "output.txt")
        start = time.perf_counter()
        problem = None
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-B", CHILD, work], cwd=work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True,
                                    preexec_fn=_limits(memory_mb, int(time_limit) + 1))
            try:
                code = proc.wait(timeout=time_limit)
            except subprocess.TimeoutExpired:
                code = None
                problem = f"stopped after the time limit of {time_limit:g} s (an endless loop, or far too slow)"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        seconds = time.perf_counter() - start
        size, output = _tail(log)
        if problem is None and (code != 0 or size >= OUTPUT_LIMIT):
            problem = describe_exit(code, size, memory_mb)
        cases = []
        for k in range(len(plan["cases"])):
            try:
                with open(os.path.join(work, "out", f"case_{k}.json")) as f:
                    status = json.load(f)
                with np.load(os.path.join(work, "out", f"case_{k}.npz"), allow_pickle=False) as z:
                    arrays = {name: z[name] for name in z.files}
                cases.append((status, arrays))
            except (OSError, ValueError, EOFError, KeyError):
                cases.append(None)
        after = package_fingerprint()
        tampered = None if after == before else (
            "not graded: the minicnn package's files changed while this submission ran (it, or a submission "
            "graded at the same time, tried to change the grader)")
        return SandboxResult(cases, problem, output, seconds, tampered)


def describe_exit(code, output_size, memory_mb):
    """A sentence for a child that ended with status ``code`` (negative: killed by that signal)."""
    if code is not None and code < 0:
        sig = -code
        if sig == signal.SIGXFSZ or output_size >= OUTPUT_LIMIT:
            return f"stopped: it wrote more than {OUTPUT_LIMIT // 2 ** 20} MB of output"
        if sig == signal.SIGXCPU:
            return "stopped after its CPU-time limit"
        name = signal.Signals(sig).name
        what = {"SIGSEGV": "a segmentation fault", "SIGABRT": "an abort", "SIGKILL": "killed",
                "SIGBUS": "a bus error"}.get(name, name)
        return f"the submission's process crashed ({what}, signal {name})"
    if output_size >= OUTPUT_LIMIT:    # (Python ignores SIGXFSZ: the writes beyond the limit failed)
        return f"stopped: it wrote more than {OUTPUT_LIMIT // 2 ** 20} MB of output"
    return (f"the submission's process ended early with exit status {code} (os._exit or exit at import?), "
            f"memory limit {memory_mb} MB")
