"""Data-parallel training: K workers, one model each, one all-reduce of the gradients per step.

    mpiexec -n 2 minicnn train --model simple_cnn --out runs/dp    # 2 workers, the run of one process

Every worker (an MPI "rank", one process per core or GPU) holds the whole
model with the same weights. The global batch of each step, B images, the
same B as in one process, is cut into K shards, one per worker
(``data.shard_bounds``: b_r = B/K images each, give or take one). Worker r
computes g_r, the gradient of the mean loss over its b_r images; then

    g = sum_r (b_r / B) g_r                                          (1)

is the gradient of the mean loss over all B images, exactly what one
process computes; every worker applies it, so the weights stay the same
everywhere and equal one process's, up to the order of float additions.
(1) is one all-reduce: ``average_gradients`` puts every b_r * g_r and b_r
in one flat buffer, sums it over the workers in place, and divides by the
sum of the b_r, which is B. With even shards that is the plain average
(sum of the g_r) / K.

What looks at the whole batch, not at one image, breaks (1): batchnorm.
By default each worker normalises with its own shard's statistics, as
PyTorch's DistributedDataParallel does; ``sync_bn=True`` (``--sync-bn``)
all-reduces the batch statistics, forward and backward, so every layer
sees the statistics of the whole global batch and the result equals one
process's (``mean_var``, ``gradient_sums``). Dropout draws its masks per
worker; augmentation is drawn for the whole batch (the same crops and flips
as one process).

Cost model. The all-reduce of S bytes of gradients among K workers, as a
ring (what NCCL, and MPI for large messages, do): the buffer is cut into K
chunks; in K-1 steps the chunks travel round the ring and are summed
(reduce-scatter), in K-1 more the sums travel round (all-gather). Each
worker sends, and receives, 2 (K-1)/K * S bytes per step, whatever K:

    t_allreduce = 2 (K-1) * alpha  +  2 (K-1)/K * S / beta              (2)

alpha: the latency of one message (a few us in shared memory, 5-50 us on
a cluster network), beta: the bandwidth of one link (10 Gb/s Ethernet:
1.25 GB/s). The compute of a step shrinks as 1/K (each worker does B/K
images), the bandwidth term of (2) does not: communication dominates once
t_step(B/K) < t_allreduce. Bucketing (all-reduce the last layers' gradients
while backward still runs on the first ones) hides up to the whole
backward pass behind (2); see docs/17-distributed.md for the numbers.

Besides the gradients, each step sends two tiny messages: three numbers
(the loss and accuracy of the global batch, ``sum_values``) and the stop
decision (``agree``). Faults: a worker that raises calls ``abort`` (MPI_Abort: the whole job
ends with its message, instead of K-1 workers waiting forever in the next
all-reduce); Ctrl-C/SIGTERM stop every worker after the same step
(``agree``), and rank 0, the only one that prints and writes files, saves
the checkpoint. The global batch and the seed define the run, not K: a
run resumed with another number of workers re-cuts the shards.

On GPUs ``NCCLCommunicator`` does the same all-reduces with NCCL (through
CuPy) on the GPU arrays; MPI still starts the workers and carries the few
small control messages.
"""
import contextlib
import os
import sys
import zlib

import numpy as np

from .backend import cupy_or_none, get_array_module
from .data import shard_bounds
from .errors import TrainingError
from .functional.norm import set_batch_norm_sync
from .speed import column_sums

__all__ = ["Communicator", "AveragingOptimizer", "MPICommunicator", "NCCLCommunicator", "DistributedError",
           "WorkersDisagree", "communicator", "launched_by_mpi", "launch_size", "LAUNCHER_VARIABLES", "STOP_REASONS"]

# Set by the MPI launchers in every process they start (MPICH/Hydra and Intel MPI: PMI_*; Open MPI:
# OMPI_*; PMIx-based launchers such as srun --mpi=pmix: PMIX_RANK; MVAPICH: MV2_*).
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
STOP_REASONS = (None, "max-minutes", "SIGTERM", "SIGINT")      # agree(): the strongest reason any worker has
INSTALL_HINT = 'pip install "minicnn[mpi]"'


class DistributedError(TrainingError):
    """A data-parallel launch that cannot work (no mpi4py, too small a batch)."""


class WorkersDisagree(TrainingError):
    """Raised on every worker at once (they all see the same gathered facts): rank 0 alone reports it."""

    every_worker = True


def launched_by_mpi(environ=None):
    """True when an MPI launcher (mpiexec, srun) started this process: the environment says so, nothing imported."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_VARIABLES)


def launch_size(environ=None):
    """The number of processes the launcher started, as its variables say (None when they do not say)."""
    environ = os.environ if environ is None else environ
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return None


def communicator(device="cpu", sync_bn=False, environ=None):
    """This process's place among the data-parallel workers, or None when it runs alone.

    ``mpi4py`` is imported only when an MPI launcher started the process
    (``launched_by_mpi``), so a plain ``minicnn train`` never loads MPI. A
    launch of K > 1 processes without mpi4py is refused with what to install.
    """
    if not launched_by_mpi(environ):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if (launch_size(environ) or 2) == 1:
            return None
        raise DistributedError(f"this process was started by an MPI launcher ({launch_size(environ) or 'several'} "
                               f"processes) but mpi4py is not installed: {INSTALL_HINT}") from None
    world = MPI.COMM_WORLD
    if world.Get_size() == 1:
        return None
    if device == "gpu":
        return NCCLCommunicator(world, MPI, sync_bn=sync_bn)
    return MPICommunicator(world, MPI, sync_bn=sync_bn)


class Communicator:
    """What a data-parallel worker does with the others; subclasses supply ``allreduce_sum`` and the rest.

    ``rank`` (0..K-1), ``size`` (K); rank 0 is the writer. The training code
    calls ``attach(trainer)`` once, trains with ``averaging(optimizer)``
    (whose step calls ``average_gradients``), ``broadcast_state`` after every
    epoch and ``reduce_evaluation`` in every evaluation.
    """

    def __init__(self, rank, size, sync_bn=False):
        self.rank, self.size, self.sync_bn = int(rank), int(size), bool(sync_bn)

    is_writer = property(lambda self: self.rank == 0, doc="rank 0 alone prints and writes files")

    # ---- primitives (MPI or NCCL) -------------------------------------------------------------
    def allreduce_sum(self, a):
        """Replace the contiguous array ``a`` on every worker, in place, by the sum of all workers' ``a``."""
        raise NotImplementedError

    def broadcast(self, a, root=0):
        """Replace the contiguous array ``a`` on every worker, in place, by worker ``root``'s."""
        raise NotImplementedError

    def allreduce_max(self, a):
        """In place: the element-wise maximum over the workers (small CPU control messages)."""
        raise NotImplementedError

    def allgather(self, a):
        """Every worker's copy of the CPU array ``a``, stacked: shape (K,) + a.shape."""
        raise NotImplementedError

    def abort(self, message, code=1):
        """End every worker of the job now (after printing ``message``)."""
        raise NotImplementedError

    def barrier(self):
        """Wait until every worker is here."""
        raise NotImplementedError

    def writer_first(self, work):
        """``work()`` on rank 0 alone, then everybody goes on: what it writes (the decoded-image cache) is
        written by one worker, and the others read it."""
        if self.is_writer:
            work()
        self.barrier()

    # ---- the lesson: one all-reduce per step ------------------------------------------------------
    def average_gradients(self, parameters, batch_size):
        """Make each ``p.grad`` the gradient of the whole global batch, (1) of the module docstring.

        ``batch_size``: b_r, this worker's images in the step. One flat buffer
        [b_r * g_r of every parameter..., b_r] is summed over the workers in
        place; its last slot is then B = sum b_r, and flat / B is sum_r (b_r/B) g_r.
        """
        params = [p for p in parameters if p.grad is not None]     # (the same on every worker)
        xp = get_array_module(params[0].grad)
        dtype = np.result_type(*[p.grad.dtype for p in params])
        flat = xp.concatenate([p.grad.ravel() for p in params] + [xp.ones(1, dtype)]).astype(dtype, copy=False)
        flat *= batch_size                                      # [b_r * g_r..., b_r]
        self.allreduce_sum(flat)                                # [sum_r b_r g_r..., B]
        flat /= flat[-1]                                        # the global batch's gradient
        offset = 0
        for p in params:
            p.grad[...] = flat[offset:offset + p.grad.size].reshape(p.grad.shape)
            offset += p.grad.size

    def averaging(self, optimizer, batches=None):
        """``optimizer``, whose ``step()`` first calls ``average_gradients`` (Horovod's DistributedOptimizer).

        The training loop stays the five lines of ``minicnn.train.fit``. With
        ``batches`` (``(images, labels)`` pairs) returns (optimizer, batches):
        each batch tells the optimizer its size b_r on its way to the loop;
        without, every worker counts as one (the plain average over K).
        """
        wrapped = AveragingOptimizer(optimizer, self)
        if batches is None:
            return wrapped

        def sized():
            for images, labels in batches:
                wrapped.batch_size = labels.shape[0]
                yield images, labels
        return wrapped, sized()

    # ---- --sync-bn: batchnorm over the whole global batch (functional.norm.set_batch_norm_sync) ----
    def mean_var(self, X):
        """Forward: the mean and biased variance of every worker's rows X (M_r, C), and M = sum M_r.

        Two all-reduces, as one process takes two passes (``speed.column_mean_var``):
        the column sums with the count, then the sums of d and d**2 about
        the global mean, d = X - mean (sum(d) corrects the mean's rounding).
        """
        xp = get_array_module(X)
        sums = xp.concatenate([column_sums(X), xp.asarray([X.shape[0]], dtype=X.dtype)])
        self.allreduce_sum(sums)                                # [sum over all rows, M]
        M = sums[-1]
        mean = sums[:-1] / M
        d = X - mean
        dev = xp.concatenate([column_sums(d), column_sums(d * d)])
        self.allreduce_sum(dev)                                 # [sum(d), sum(d**2)] over all rows
        sum_d, sum_d2 = dev[:X.shape[1]], dev[X.shape[1]:]
        return mean + sum_d / M, (sum_d2 - sum_d * sum_d / M) / M, int(M)

    def gradient_sums(self, dbeta, dgamma, M):
        """Backward: the two sums dx needs, over every worker's rows, as this worker's upstream sees them.

        Worker s's upstream gradient is that of its own mean loss, 1/w_s times
        the global loss's (w_s = M_s / M_all). So the global sum(g) is
        sum_s w_s dbeta_s, and on worker r, in its units, sum_s M_s dbeta_s / M_r
        (dgamma alike). One all-reduce of [M_r dbeta_r, M_r dgamma_r, M_r].
        """
        xp = get_array_module(dbeta)
        C = dbeta.shape[0]
        buf = xp.concatenate([dbeta, dgamma, xp.ones(1, dtype=dbeta.dtype)]) * M
        self.allreduce_sum(buf)
        return buf[:C] / M, buf[C:2 * C] / M, int(round(float(buf[-1])))

    # ---- the rest of a run -----------------------------------------------------------------------
    def broadcast_state(self, model):
        """Every worker takes rank 0's parameters and buffers (batchnorm's running statistics differ
        per worker without --sync-bn; checkpoints and evaluations use rank 0's, as DDP does)."""
        for t in list(model.parameters()) + list(model.buffers()):
            a = get_array_module(t.data).ascontiguousarray(t.data)
            self.broadcast(a)
            t.data[...] = a

    def reduce_evaluation(self, loss_sum, confusion):
        """``train.evaluate``'s ``reduce``: the loss sum and the confusion matrix summed over the workers."""
        buf = np.concatenate([[float(loss_sum)], confusion.ravel().astype(np.float64)])
        self.allreduce_sum(buf)
        return float(buf[0]), np.rint(buf[1:]).astype(np.int64).reshape(confusion.shape)

    def sum_values(self, values):
        """A dict of numbers summed over the workers (the training loss and accuracy of the global batch)."""
        buf = np.array([float(v) for v in values.values()])
        self.allreduce_sum(buf)
        return {k: int(round(total)) if isinstance(v, (int, np.integer)) else total
                for (k, v), total in zip(values.items(), buf.tolist())}

    def agree(self, stop_reason):
        """``Run.agree``: one stop decision for all (a signal or --max-minutes seen by any worker)."""
        code = np.array([STOP_REASONS.index(stop_reason) if stop_reason in STOP_REASONS else 1], dtype=np.int64)
        self.allreduce_max(code)
        return STOP_REASONS[int(code[0])]

    def check_same_data(self, train_set, val_set, test_set, classes, what="--data"):
        """Refuse, on every worker at once, data that differ between workers (image counts, classes)."""
        names = "\n".join(map(str, classes)).encode()
        mine = np.array([len(train_set), len(val_set) if val_set is not None else 0, len(test_set),
                         len(classes), zlib.crc32(names)], dtype=np.int64)
        table = self.allgather(mine)
        for rank, theirs in enumerate(table):
            if not np.array_equal(theirs, table[0]):
                def say(row):
                    return (f"{row[0]} training, {row[1]} validation, {row[2]} test images in {row[3]} classes "
                            f"(class list checksum {row[4]:08x})")
                raise WorkersDisagree(f"the workers see different data ({what}): rank 0 has {say(table[0])}, "
                                      f"rank {rank} has {say(theirs)}; every worker must read the same files")

    def attach(self, trainer):
        """Make ``trainer`` (``minicnn.train.Trainer``) worker ``rank`` of ``size``; called before any step.

        Checks the data and the batch size, gives every loader its shard,
        makes rank 0 the one writer and the stop a common decision, switches
        --sync-bn on, and starts all from rank 0's weights.
        """
        cfg = trainer.cfg
        self.check_same_data(trainer.train_set, trainer.val_set, trainer.test_set, trainer.classes)
        last = len(trainer.train_set) % cfg.batch_size or cfg.batch_size
        if last < self.size:
            raise WorkersDisagree(f"--batch-size {cfg.batch_size}: the last batch of every epoch has {last} "
                                  f"image(s), fewer than the {self.size} workers; choose a batch size (or "
                                  f"--subset) that leaves every worker at least one image")
        for loader in (trainer.train_loader, trainer.val_loader, trainer.test_loader):
            if loader is not None:
                loader.shard = (self.rank, self.size)
        trainer.job.writer, trainer.job.agree = self.is_writer, self.agree
        set_batch_norm_sync(self if self.sync_bn else None)
        self.broadcast_state(trainer.model)
        lo, hi = shard_bounds(cfg.batch_size, 0, self.size)
        shards = f"{hi - lo}" + ("" if cfg.batch_size % self.size == 0 else f" or {hi - lo + 1}")
        trainer.log(f"data-parallel: {self.size} workers ({type(self).__name__[:-len('Communicator')]}), "
                    f"global batch {cfg.batch_size} = {shards} images per worker; batchnorm statistics "
                    f"{'of the whole global batch (--sync-bn)' if self.sync_bn else 'per worker'}")

    @contextlib.contextmanager
    def abort_on_error(self, command="train"):
        """Around a worker's work: an error on one worker ends the whole job (MPI_Abort) with its message.

        A ``WorkersDisagree`` is raised on every worker together: rank 0
        reports it, the others leave quietly.
        """
        try:
            yield
        except BaseException as e:
            if getattr(e, "every_worker", False) or isinstance(e, SystemExit):
                if self.is_writer or isinstance(e, SystemExit):
                    raise
                raise SystemExit(2) from None
            what = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            if isinstance(e, TrainingError):
                what = str(e)
            self.abort(f"minicnn {command}: error on rank {self.rank} of {self.size}: {what}; ending all "
                       f"{self.size} workers")


class AveragingOptimizer:
    """An optimizer whose ``step()`` makes the gradients those of the global batch first (``Communicator.averaging``).

    Everything else (``zero_grad``, ``param_groups``, ``state_dict``) is the
    wrapped optimizer's.
    """

    def __init__(self, optimizer, comm):
        self.optimizer, self.comm, self.batch_size = optimizer, comm, 1

    def step(self, closure=None):
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.comm.average_gradients(params, self.batch_size)
        return self.optimizer.step(closure)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


class MPICommunicator(Communicator):
    """The workers of an MPI launch (``mpi4py``); arrays on the CPU."""

    def __init__(self, world, MPI, sync_bn=False):
        super().__init__(world.Get_rank(), world.Get_size(), sync_bn)
        self.world, self.MPI = world, MPI

    def allreduce_sum(self, a):
        self.world.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)

    def broadcast(self, a, root=0):
        self.world.Bcast(a, root=root)

    def allreduce_max(self, a):
        self.world.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.MAX)

    def allgather(self, a):
        out = np.empty((self.size,) + a.shape, dtype=a.dtype)
        self.world.Allgather(np.ascontiguousarray(a), out)
        return out

    def abort(self, message, code=1):
        print(message, file=sys.stderr, flush=True)
        self.world.Abort(code)

    def barrier(self):
        self.world.Barrier()


class NCCLCommunicator(MPICommunicator):
    """On GPUs: the gradient, batchnorm and weight messages go GPU to GPU through NCCL (``cupy.cuda.nccl``).

    One GPU per worker (rank r uses GPU r mod the GPUs it sees). MPI starts
    the workers, hands NCCL its id from rank 0, and carries the small CPU
    messages (the stop decision, evaluation counts, the data check).
    """

    NCCL_TYPES = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
                  "int64": "NCCL_INT64", "int32": "NCCL_INT32"}

    def __init__(self, world, MPI, sync_bn=False, cupy=None):
        super().__init__(world, MPI, sync_bn)
        self.cupy = cupy if cupy is not None else cupy_or_none()
        if self.cupy is None:
            raise DistributedError("--device gpu with several workers needs CuPy and a GPU on every worker")
        self.nccl = self.cupy.cuda.nccl
        self.cupy.cuda.Device(self.rank % self.cupy.cuda.runtime.getDeviceCount()).use()
        uid = np.zeros(128, dtype=np.int64)              # NCCL's id: 128 bytes, made by rank 0, sent by MPI
        if self.rank == 0:
            uid[:] = self.nccl.get_unique_id()
        self.world.Bcast(uid, root=0)
        self.comm = self.nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)

    def _nccl_args(self, a):
        if not a.flags.c_contiguous:
            raise ValueError("NCCL needs a contiguous array")
        return a.data.ptr, a.size, getattr(self.nccl, self.NCCL_TYPES[a.dtype.name]), \
            self.cupy.cuda.get_current_stream().ptr

    def allreduce_sum(self, a):
        if isinstance(a, np.ndarray):                    # a CPU array: MPI
            return super().allreduce_sum(a)
        ptr, count, dtype, stream = self._nccl_args(a)
        self.comm.allReduce(ptr, ptr, count, dtype, self.nccl.NCCL_SUM, stream)

    def broadcast(self, a, root=0):
        if isinstance(a, np.ndarray):
            return super().broadcast(a, root)
        ptr, count, dtype, stream = self._nccl_args(a)
        self.comm.bcast(ptr, count, dtype, root, stream)
