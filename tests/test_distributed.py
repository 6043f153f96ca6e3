"""Data-parallel training (minicnn.distributed): the pieces in process, then real ``mpiexec -n 2`` launches.

The launches run on this machine with MPI kept on the loopback interface
(``LOOPBACK``); each has a timeout and is killed with its whole process
group. They skip with a reason where mpi4py or mpiexec cannot load.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.data import ArrayDataset, Compose, DataLoader, RandomCrop, RandomHorizontalFlip, ToFloat, shard_bounds
from minicnn.distributed import (LAUNCHER_VARIABLES, Communicator, DistributedError, NCCLCommunicator,
                                 communicator, launched_by_mpi)

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
# Keep MPI on the machine: Hydra's control connections and the fork launcher on lo; UCX (MPICH's ch4
# netmod in the wheel), libfabric (ch4:ofi) and Open MPI's TCP transports restricted to loopback.
LOOPBACK = {"HYDRA_IFACE": "lo", "HYDRA_LAUNCHER": "fork", "UCX_TLS": "self,sm,tcp", "UCX_NET_DEVICES": "lo",
            "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "lo", "MPIR_CVAR_CH3_INTERFACE_HOSTNAME": "127.0.0.1",
            "OMPI_MCA_btl_tcp_if_include": "lo", "OMPI_MCA_oob_tcp_if_include": "lo"}


# ---------------------------------------------------------------------------- in process
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 500), st.integers(1, 9))
def test_shards_cover_the_batch_once_and_differ_by_at_most_one(n, ranks):
    bounds = [shard_bounds(n, r, ranks) for r in range(ranks)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_loader_shards_are_the_parts_of_the_same_augmented_batches():
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (23, 3, 8, 8)).astype(np.uint8), rng.integers(0, 4, 23))
    augment = Compose([RandomCrop(8, padding=2), RandomHorizontalFlip(), ToFloat()])
    whole = DataLoader(data, 7, shuffle=True, transform=augment, seed=3)
    parts = []
    for r in range(3):
        loader = DataLoader(data, 7, shuffle=True, transform=augment, seed=3)
        loader.shard = (r, 3)
        loader.set_epoch(1)
        parts.append(list(loader))
    whole.set_epoch(1)
    for k, (images, labels) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[k][0].data for p in parts]), images.data)
        np.testing.assert_array_equal(np.concatenate([p[k][1].data for p in parts]), labels.data)


class TwoWorkers(Communicator):
    """Worker 0 of two, the other's buffers given in advance (``others``, used in order)."""

    def __init__(self, others):
        super().__init__(0, 2)
        self.others = list(others)

    def allreduce_sum(self, a):
        a += self.others.pop(0)


def test_average_gradients_weights_each_worker_by_its_batch_share():
    from minicnn import nn

    p, q = nn.Parameter(np.zeros((2, 3))), nn.Parameter(np.zeros(4))
    g0p, g0q, g1p, g1q = (np.random.default_rng(i).normal(size=s) for i, s in enumerate([(2, 3), 4, (2, 3), 4]))
    p.grad, q.grad = g0p.copy(), g0q.copy()
    other = np.concatenate([g1p.ravel(), g1q, [1.0]]) * 5          # worker 1: 5 images, worker 0: 3
    TwoWorkers([other]).average_gradients([p, q], 3)
    np.testing.assert_allclose(p.grad, (3 * g0p + 5 * g1p) / 8, rtol=1e-12)
    np.testing.assert_allclose(q.grad, (3 * g0q + 5 * g1q) / 8, rtol=1e-12)


def test_sync_bn_sums_are_those_of_the_whole_batch():
    X0, X1 = np.random.default_rng(1).normal(2.0, 3.0, (6, 4)), np.random.default_rng(2).normal(2.0, 3.0, (10, 4))
    both = np.concatenate([X0, X1])
    mean_other = np.concatenate([X1.sum(0), [10.0]])
    # (the second all-reduce: worker 1's sums of d and d**2 about the global mean)
    d1 = X1 - both.mean(0)
    mean, var, M = TwoWorkers([mean_other, np.concatenate([d1.sum(0), (d1 ** 2).sum(0)])]).mean_var(X0)
    assert M == 16
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-13)
    np.testing.assert_allclose(var, both.var(0), rtol=1e-12)
    db0, dg0, db1, dg1 = np.random.default_rng(3).normal(size=(4, 4))
    dbeta, dgamma, M = TwoWorkers([np.concatenate([db1, dg1, [1.0]]) * 10]).gradient_sums(db0, dg0, 6)
    assert M == 16
    np.testing.assert_allclose(dbeta, (6 * db0 + 10 * db1) / 6)
    np.testing.assert_allclose(dgamma, (6 * dg0 + 10 * dg1) / 6)


def test_evaluation_counts_and_stop_decision_are_common():
    comm = TwoWorkers([np.array([1.5, 0, 2, 1, 0])])
    loss, confusion = comm.reduce_evaluation(2.0, np.array([[3, 0], [1, 4]]))
    assert loss == 3.5 and confusion.tolist() == [[3, 2], [2, 4]]
    sums = TwoWorkers([np.array([4.0, 20, 7])]).sum_values({"loss_sum": 1.5, "seen": 20, "correct": 3})
    assert sums == {"loss_sum": 5.5, "seen": 40, "correct": 10} and isinstance(sums["seen"], int)

    class Max(TwoWorkers):
        def allreduce_max(self, a):
            np.maximum(a, self.others.pop(0), out=a)

    assert Max([np.array([2])]).agree(None) == "SIGTERM"         # the other worker was signalled
    assert Max([np.array([0])]).agree("max-minutes") == "max-minutes"
    assert Max([np.array([0])]).agree(None) is None


def test_plain_process_never_imports_mpi4py():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    code = ("import sys; from minicnn.distributed import communicator; import minicnn.cli; "
            "assert communicator() is None; assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not launched_by_mpi({}) and launched_by_mpi({"PMI_RANK": "0"}) and launched_by_mpi({"PMIX_RANK": "1"})


def test_launch_without_mpi4py_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; from minicnn.cli import main; "
            f"sys.exit(main(['train', '--model', 'simple_cnn', '--out', {str(tmp_path / 'run')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "PMI_SIZE": "2", "PMI_RANK": "0"})
    assert out.returncode == 2, out.stderr
    assert 'pip install "minicnn[mpi]"' in out.stderr and "2 processes" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()
    with pytest.raises(DistributedError, match="mpi4py"):
        sys.modules_backup = sys.modules.get("mpi4py")
        try:
            sys.modules["mpi4py"] = None
            communicator(environ={"PMI_SIZE": "4"})
        finally:
            if sys.modules_backup is None:
                sys.modules.pop("mpi4py")
            else:
                sys.modules["mpi4py"] = sys.modules_backup
            del sys.modules_backup


class FakeNCCL:
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_FLOAT16, NCCL_INT64, NCCL_INT32, NCCL_SUM = 7, 8, 6, 4, 2, 0
    calls = []

    @staticmethod
    def get_unique_id():
        FakeNCCL.calls.append(("get_unique_id",))
        return tuple(range(-64, 64))

    class NcclCommunicator:
        def __init__(self, ndev, uid, rank):
            FakeNCCL.calls.append(("init", ndev, uid[:3], rank))

        def allReduce(self, send, recv, count, dtype, op, stream):
            FakeNCCL.calls.append(("allReduce", send, recv, count, dtype, op, stream))

        def bcast(self, buf, count, dtype, root, stream):
            FakeNCCL.calls.append(("bcast", buf, count, dtype, root, stream))


class FakeGPUArray:
    """What the NCCL path reads of a CuPy array: its pointer, size, dtype, contiguity."""

    def __init__(self, n, dtype="float32"):
        self.size, self.dtype = n, np.dtype(dtype)
        self.data, self.flags = SimpleNamespace(ptr=0xABC0), SimpleNamespace(c_contiguous=True)


class FakeWorld:
    def __init__(self, rank, size):
        self.rank, self.size, self.calls = rank, size, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Bcast(self, a, root=0):
        self.calls.append(("Bcast", a.size, root))
        if self.rank != root:
            a[:] = np.arange(-64, 64)           # what rank 0 sent

    def Allreduce(self, inplace, a, op=None):
        self.calls.append(("Allreduce", a.size, op))


@pytest.mark.parametrize("rank", [0, 1])
def test_nccl_communicator_sends_gpu_arrays_through_nccl_and_cpu_ones_through_mpi(rank):
    used = []
    cupy = SimpleNamespace(cuda=SimpleNamespace(
        nccl=FakeNCCL, Device=lambda i: SimpleNamespace(use=lambda: used.append(i)),
        runtime=SimpleNamespace(getDeviceCount=lambda: 2), get_current_stream=lambda: SimpleNamespace(ptr=77)))
    FakeNCCL.calls = []
    world = FakeWorld(rank, 2)
    MPI = SimpleNamespace(IN_PLACE="in-place", SUM="sum", MAX="max")
    comm = NCCLCommunicator(world, MPI, cupy=cupy)
    assert used == [rank]                                   # one GPU per worker
    assert (("get_unique_id",) in FakeNCCL.calls) == (rank == 0)     # rank 0 makes the id, MPI sends it
    assert ("init", 2, (-64, -63, -62), rank) in FakeNCCL.calls
    comm.allreduce_sum(FakeGPUArray(1000))
    assert FakeNCCL.calls[-1] == ("allReduce", 0xABC0, 0xABC0, 1000, FakeNCCL.NCCL_FLOAT32, FakeNCCL.NCCL_SUM, 77)
    comm.broadcast(FakeGPUArray(10, "float64"))
    assert FakeNCCL.calls[-1] == ("bcast", 0xABC0, 10, FakeNCCL.NCCL_FLOAT64, 0, 77)
    n_nccl = len(FakeNCCL.calls)
    comm.allreduce_sum(np.zeros(3))                          # a CPU array (evaluation counts): MPI
    assert world.calls[-1] == ("Allreduce", 3, "sum") and len(FakeNCCL.calls) == n_nccl


# ---------------------------------------------------------------------------- mpiexec -n 2
def _mpiexec():
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def _mpi_unavailable():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py is not installed (pip install "minicnn[mpi]")'
    if _mpiexec() is None:
        return "no mpiexec on PATH or beside the Python interpreter"
    return None


pytestmark_mpi = pytest.mark.skipif(_mpi_unavailable() is not None, reason=str(_mpi_unavailable()))


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(LOOPBACK, PYTHONPATH=str(ROOT), MINICNN_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    return env


def _train(*options):
    return [sys.executable, "-m", "minicnn", "train", *options]


def _start(commands, tmp_path, n=2):
    """Start ``mpiexec -n n COMMAND`` (or, for a list of commands, one rank each: ``-n 1 A : -n 1 B``)."""
    argv = [_mpiexec()]
    if isinstance(commands[0], str):
        argv += ["-n", str(n), *commands]
    else:
        for i, c in enumerate(commands):
            argv += ([":"] if i else []) + ["-n", "1", *c]
    return subprocess.Popen(argv, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(proc, timeout):
    """Wait at most ``timeout`` s; then kill the launch's whole process group. Returns (rc, output, seconds)."""
    t0 = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the launch did not end within {timeout} s; output:\n{out[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)          # nothing of it may survive the test
        except ProcessLookupError:
            pass
    return proc.returncode, out, time.monotonic() - t0


def _launch(commands, tmp_path, n=2, timeout=180):
    return _finish(_start(commands, tmp_path, n), timeout)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from conftest import make_image_tree
    return make_image_tree(tmp_path_factory.mktemp("dist_tree"), n_train=20, n_test=4)


COMMON = ["--model", "simple_cnn", "--val-split", "0", "--no-progress", "--tta", "none", "--seed", "1"]


@pytestmark_mpi
def test_two_workers_give_the_weights_of_one_process_in_float64(tmp_path):
    rc, out, _ = _launch([sys.executable, str(WORKER), str(tmp_path / "r.json")], tmp_path, timeout=240)
    assert rc == 0, out[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    for case in ("sync_bn", "sync_bn_uneven", "no_bn", "frozen_bn"):     # (uneven: 13 = 6 + 7 images)
        assert max(r[case]) < 1e-10, (case, r[case])
    assert min(r["bn_per_worker"]) > 1e-6        # per-worker statistics: a different (DDP's) computation
    assert r["eval"]["acc_one"] == r["eval"]["acc_sharded"] and r["eval"]["confusion_equal"]
    assert r["eval"]["loss_difference"] < 1e-5 and r["workers_identical"]


def _weights(path):
    ckpt = np.load(path, allow_pickle=False)
    return {k: ckpt[k].astype(np.float64) for k in ckpt.files if k.startswith("model/")}


def _difference(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.slow
@pytestmark_mpi
def test_two_workers_with_sync_bn_match_one_process_within_float32_rounding(tree, tmp_path):
    # (no augmentation: with translations, the first layer's gradient under batchnorm is a small sum of the
    # workers' large opposite parts, and float32 rounding reaches 1e-4 there; see docs/17)
    options = COMMON + ["--data", str(tree), "--epochs", "1", "--batch-size", "40", "--lr", "0.05", "--no-augment"]
    nudged = [o if o != "0.05" else repr(0.05 * (1 + 1e-7)) for o in options]
    for name, opts in (("one", options), ("nudged", nudged)):
        out = subprocess.run(_train(*opts, "--out", str(tmp_path / name)), cwd=ROOT, env=_env(tmp_path),
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
    # Rank 1 is given its own --out: it must not even create it (rank 0 alone writes).
    rc, out, _ = _launch([_train(*options, "--sync-bn", "--out", str(tmp_path / "two")),
                          _train(*options, "--sync-bn", "--out", str(tmp_path / "rank1"))], tmp_path)
    assert rc == 0, out[-3000:]
    assert "data-parallel: 2 workers" in out and out.count("test accuracy") == 1    # rank 0 alone prints
    assert not (tmp_path / "rank1").exists()
    one, drift = _weights(tmp_path / "one" / "last.npz"), _weights(tmp_path / "nudged" / "last.npz")
    two = _weights(tmp_path / "two" / "last.npz")
    own_drift = _difference(one, drift)         # what one process moves under a 1e-7 change of the learning rate
    assert 0 < own_drift < 1e-4
    assert _difference(one, two) < 10 * own_drift, (_difference(one, two), own_drift)
    import csv
    rows = [next(csv.DictReader(open(tmp_path / name / "metrics.csv"))) for name in ("one", "two")]
    assert abs(float(rows[0]["train_loss"]) - float(rows[1]["train_loss"])) < 1e-4     # all workers' images
    assert abs(float(rows[0]["train_acc"]) - float(rows[1]["train_acc"])) <= 1 / 200


def _descendants(pid):
    children = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(p))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _worker_pid(launcher, rank):
    """The pid of MPI rank ``rank`` of the launch (a descendant of mpiexec with PMI_RANK=rank)."""
    for pid in _descendants(launcher.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ and b"minicnn" in cmdline:
            return pid
    return None


def _wait_for(path, proc, timeout=120):
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{path} never appeared: {proc.communicate()[0][-3000:]}")
        time.sleep(0.2)


LONG = ["--epochs", "3", "--batch-size", "10", "--subset", "100", "--no-augment"]


@pytestmark_mpi
def test_a_killed_worker_ends_the_launch_and_the_checkpoint_resumes_with_one_process(tree, tmp_path):
    from minicnn.checkpoint import load_checkpoint

    out_dir = tmp_path / "run"
    options = COMMON + LONG + ["--data", str(tree), "--out", str(out_dir)]
    proc = _start(_train(*options), tmp_path)
    _wait_for(out_dir / "last.npz", proc)               # epoch 1 done; now in the middle of epoch 2
    time.sleep(1.0)
    pid = _worker_pid(proc, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    rc, out, seconds = _finish(proc, timeout=60)
    assert rc != 0 and seconds < 60, out[-2000:]
    ckpt = load_checkpoint(str(out_dir / "last.npz"))   # intact (written atomically)
    assert int(ckpt["epoch"]) >= 1
    resumed = subprocess.run(_train(*options, "--resume"), cwd=ROOT, env=_env(tmp_path), capture_output=True,
                             text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "last.npz at epoch" in resumed.stdout and int(load_checkpoint(str(out_dir / "last.npz"))["epoch"]) == 3


@pytestmark_mpi
def test_sigterm_to_the_launcher_saves_a_checkpoint_and_two_workers_resume_it(tree, tmp_path):
    from minicnn.checkpoint import load_checkpoint

    out_dir = tmp_path / "run"
    options = COMMON + LONG + ["--data", str(tree), "--out", str(out_dir)]
    proc = _start(_train(*options), tmp_path)
    _wait_for(out_dir / "last.npz", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    rc, out, _ = _finish(proc, timeout=60)
    assert rc == 143 and "interrupted (SIGTERM)" in out and out.count("interrupted (SIGTERM)") == 1, out[-2000:]
    stopped = load_checkpoint(str(out_dir / "last.npz"))
    assert (int(stopped["epoch"]), int(stopped["step"])) < (3, 0)
    rc, out, _ = _launch(_train(*options, "--resume"), tmp_path)
    assert rc == 0 and "last.npz at epoch" in out, out[-2000:]
    assert int(load_checkpoint(str(out_dir / "last.npz"))["epoch"]) == 3


@pytestmark_mpi
def test_a_worker_failing_alone_aborts_the_job_with_its_message(tree, tmp_path):
    options = COMMON + ["--epochs", "1", "--batch-size", "10"]
    rc, out, seconds = _launch([_train(*options, "--data", str(tree), "--out", str(tmp_path / "a")),
                                _train(*options, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "b"))],
                               tmp_path, timeout=60)
    assert rc != 0 and seconds < 60
    assert "error on rank 1 of 2" in out and "missing" in out, out[-2000:]


@pytestmark_mpi
def test_workers_with_different_data_are_refused_before_any_step(tree, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tree, other, ignore=shutil.ignore_patterns("cache"))
    next((other / "train" / "cat").iterdir()).unlink()          # one image fewer
    options = COMMON + ["--epochs", "1", "--batch-size", "10", "--out", str(tmp_path / "run")]
    rc, out, _ = _launch([_train(*options, "--data", str(tree)), _train(*options, "--data", str(other))],
                         tmp_path, timeout=90)
    assert rc != 0 and out.count("the workers see different data") == 1, out[-2000:]
    assert "rank 0 has 200 training" in out and "rank 1 has 199 training" in out
    assert not (tmp_path / "run" / "last.npz").exists()


@pytestmark_mpi
def test_a_last_batch_smaller_than_the_workers_is_refused_clearly(tree, tmp_path):
    rc, out, _ = _launch(_train(*COMMON, "--data", str(tree), "--epochs", "1", "--batch-size", "199",
                                "--out", str(tmp_path / "run")), tmp_path, timeout=90)
    assert rc != 0 and "--batch-size 199: the last batch of every epoch has 1 image(s)" in out, out[-2000:]
    assert "Traceback" not in out
