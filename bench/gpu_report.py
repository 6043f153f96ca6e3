"""Helpers of ``bench/gpu_checks.sh``: the peak GPU memory of a step, and the final summary.

    python bench/gpu_report.py memory --device gpu --models simple_cnn,resnet20 --out mem.json
    python bench/gpu_report.py summary --status STATUS.tsv --out-dir OUT [--junit junit.xml] ...

``memory`` runs three training steps of each model (the setup and step of
``bench/bench_step.py``, batch 128 by default) for minicnn on CuPy and for
PyTorch on the same GPU, and writes, per framework and model, the memory a
step adds on top of what the model, optimizer and batch already hold:

- PyTorch: ``torch.cuda.max_memory_allocated()`` during the steps minus
  ``memory_allocated()`` before them (cuDNN and cuBLAS workspaces included:
  they come from the same caching allocator);
- minicnn: CuPy's memory pool grows to the largest amount in use at once and
  keeps it, so ``total_bytes()`` after the steps minus ``used_bytes()``
  before them (an upper bound: blocks are rounded up and may fragment).

On the CPU (``--device cpu``, the dry run) it runs the same steps and writes
null for the GPU figures.

``summary`` reads what the steps left (their exit status and wall time, the
pytest JUnit file, the benchmark log, the memory JSON, the training run's
test.json) and writes ``summary.json``; it prints one line per step.
"""
import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


# ---------------------------------------------------------------------- memory
def _minicnn_memory(name, batch, device):
    import bench_step as b
    from minicnn.backend import cupy_or_none

    cp = cupy_or_none() if device == "gpu" else None
    pool = cp.get_default_memory_pool() if cp is not None else None
    if pool is not None:
        pool.free_all_blocks()
    state = b.minicnn_setup(name, batch, device)
    if pool is not None:
        cp.cuda.Device().synchronize()
        before = pool.used_bytes()
    for _ in range(3):
        b.minicnn_step(*state)
    if pool is None:
        return None
    cp.cuda.Device().synchronize()
    mib = (pool.total_bytes() - before) / 2**20
    del state
    pool.free_all_blocks()
    return round(mib, 1)


def _torch_memory(name, batch, device):
    import bench_step as b
    try:
        import torch
    except ImportError:
        return None
    if device != "gpu" or not torch.cuda.is_available():
        b.torch_step(*b.torch_setup(name, batch, "cpu"))      # the code path, at least
        return None
    state = b.torch_setup(name, batch, device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    for _ in range(3):
        b.torch_step(*state)
    torch.cuda.synchronize()
    mib = (torch.cuda.max_memory_allocated() - before) / 2**20
    del state
    torch.cuda.empty_cache()
    return round(mib, 1)


def cmd_memory(args):
    result = {"device": args.device, "batch": args.batch,
              "what": "MiB a training step adds above the model, optimizer state and batch; "
                      "PyTorch: max_memory_allocated; minicnn: CuPy pool total_bytes (upper bound)"}
    for name in args.models.split(","):
        ours = _minicnn_memory(name, args.batch, args.device)
        theirs = _torch_memory(name, args.batch, args.device)
        ratio = round(ours / theirs, 2) if ours and theirs else None
        result[name] = {"minicnn_MiB": ours, "pytorch_MiB": theirs, "ratio": ratio}
        print(f"{name}: peak GPU memory of a step: minicnn {ours} MiB, PyTorch {theirs} MiB, ratio {ratio}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


# ---------------------------------------------------------------------- summary
def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _tests(junit):
    """Counts from the JUnit file, and the GPU-marked tests (``cupy`` or ``gpu`` in their id) that skipped."""
    if not junit or not os.path.exists(junit):
        return None
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError:
        return None
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    gpu_ran, gpu_skipped, failed = 0, [], []
    for case in root.iter("testcase"):
        counts["tests"] += 1
        test_id = f"{case.get('classname')}::{case.get('name')}"
        params = case.get("name", "").partition("[")[2]          # the parametrisation id, if any
        on_gpu = re.search(r"(^|[-_\[])(cupy|gpu)([-_\]]|$)", params) is not None
        if case.find("skipped") is not None:
            counts["skipped"] += 1
            if on_gpu:
                gpu_skipped.append(test_id)
        elif case.find("failure") is not None or case.find("error") is not None:
            counts["failures" if case.find("failure") is not None else "errors"] += 1
            failed.append(test_id)
        elif on_gpu:
            gpu_ran += 1
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts.update(gpu_tests_run=gpu_ran, gpu_tests_skipped=len(gpu_skipped),
                  first_gpu_skips=gpu_skipped[:10], first_failures=failed[:20])
    return counts


_BENCH_LINE = re.compile(r"== (\w+): minicnn ([\d.]+) ms/step(?:, PyTorch ([\d.]+) ms/step, "
                         r"ratio minicnn/PyTorch = ([\d.]+))?")


def _bench(log):
    text = _read(log) if log else None
    if not text:
        return None
    out = {}
    for name, ours, theirs, ratio in _BENCH_LINE.findall(text):
        out[name] = {"minicnn_ms": float(ours), "pytorch_ms": float(theirs) if theirs else None,
                     "ratio": float(ratio) if ratio else None}
    return out


def _json(path):
    text = _read(path) if path else None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def cmd_summary(args):
    steps = {}
    for line in (_read(args.status) or "").splitlines():
        name, rc, seconds = line.split("\t")
        steps[name] = {"exit_status": int(rc), "wall_s": round(float(seconds), 1),
                       "timed_out": int(rc) in (124, 137)}
    summary = {"mode": args.mode, "environment": _json(args.env), "steps": steps,
               "tests": _tests(args.junit), "bench": _bench(args.bench_log),
               "memory": _json(args.memory), "train": _json(args.train_json)}
    if summary["train"] is not None and "train" in steps:
        summary["train"]["wall_s_including_decoding_and_test"] = steps["train"]["wall_s"]
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    print("\n==================== summary (" + args.mode + ") ====================")
    for name, s in steps.items():
        state = "ok" if s["exit_status"] == 0 else ("TIMED OUT" if s["timed_out"] else f"FAILED (exit {s['exit_status']})")
        print(f"{name:<8} {state:<20} {s['wall_s']:7.1f} s")
    t = summary["tests"]
    if t:
        print(f"tests:   {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
              f"{t['skipped']} skipped; GPU cases run {t['gpu_tests_run']}, skipped {t['gpu_tests_skipped']}")
    for name, b in (summary["bench"] or {}).items():
        print(f"bench:   {name}: minicnn {b['minicnn_ms']} ms/step, PyTorch {b['pytorch_ms']} ms/step, "
              f"ratio {b['ratio']}")
    for name, m in (summary["memory"] or {}).items():
        if isinstance(m, dict):
            print(f"memory:  {name}: minicnn {m['minicnn_MiB']} MiB, PyTorch {m['pytorch_MiB']} MiB, ratio {m['ratio']}")
    tr = summary["train"]
    if tr:
        print(f"train:   test accuracy {tr.get('test_accuracy')} after {tr.get('epochs_done')} epochs, "
              f"{tr.get('wall_s_including_decoding_and_test')} s wall (decoding and test included)")
    print(f"written: {os.path.join(args.out_dir, 'summary.json')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--device", choices=["cpu", "gpu"], default="gpu")
    m.add_argument("--models", default="simple_cnn,resnet20")
    m.add_argument("--batch", type=int, default=128)
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_memory)
    s = sub.add_parser("summary")
    s.add_argument("--mode", default="gpu")
    s.add_argument("--status", required=True, help="TSV: step, exit status, seconds")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--env")
    s.add_argument("--junit")
    s.add_argument("--bench-log")
    s.add_argument("--memory")
    s.add_argument("--train-json")
    s.set_defaults(func=cmd_summary)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
