"""Run by tests/test_distributed.py as ``mpiexec -n K python tests/distributed_worker.py OUT.json``.

Every worker trains a small network data-parallel (sharded loader, one
gradient all-reduce per step) and also, alone, the same network on the
whole batches (the one-process reference), in float64; it writes the
largest differences to OUT.json (rank 0; every rank's own numbers are
gathered there). Cases: batchnorm with and without --sync-bn, an uneven
global batch, a network without batchnorm, frozen batchnorm, and sharded
evaluation.
"""
import json
import sys

import numpy as np

from minicnn import nn, optim
from minicnn.autograd import Tensor
from minicnn.data import ArrayDataset, Compose, DataLoader, RandomCrop, RandomHorizontalFlip, ToFloat
from minicnn.distributed import communicator
from minicnn.functional.norm import set_batch_norm_sync
from minicnn.nn import init
from minicnn.train import evaluate, fit


def network(batchnorm=True, frozen_bn=False):
    init.manual_seed(3)
    bn = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), bn(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), bn(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 3)).double()
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.data[...] = 0.3
                m.requires_grad_(False)          # fit keeps batchnorm layers with all-frozen parameters in eval mode
    return model


def float64(loader):
    for images, labels in loader:
        yield Tensor(images.data.astype(np.float64)), labels


def train(model, dataset, batch_size, comm=None, epochs=2):
    loader = DataLoader(dataset, batch_size, shuffle=True, seed=5, prefetch=False,
                        transform=Compose([RandomCrop(8, padding=1), RandomHorizontalFlip(), ToFloat()]))
    if comm is not None:
        loader.shard = (comm.rank, comm.size)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        if comm is None:
            fit(model, float64(loader), opt)
        else:                                   # the optimizer's step averages the gradients first
            fit(model, *reversed(comm.averaging(opt, float64(loader))))
    return model


def max_difference(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return max(float(np.abs(sa[k] - sb[k]).max()) for k in sa)


def main(out):
    comm = communicator()
    assert comm is not None and comm.size >= 2, "run me under mpiexec -n K, K >= 2"
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (52, 3, 8, 8)).astype(np.uint8), rng.integers(0, 3, 52))
    results = {}
    cases = {"sync_bn": dict(batchnorm=True, sync=True, batch=16),
             "sync_bn_uneven": dict(batchnorm=True, sync=True, batch=13),
             "no_bn": dict(batchnorm=False, sync=False, batch=16),
             "frozen_bn": dict(batchnorm=True, frozen_bn=True, sync=False, batch=13),
             "bn_per_worker": dict(batchnorm=True, sync=False, batch=16)}
    for name, case in cases.items():
        kind = dict(batchnorm=case["batchnorm"], frozen_bn=case.get("frozen_bn", False))
        set_batch_norm_sync(None)
        alone = train(network(**kind), data, case["batch"])
        set_batch_norm_sync(comm if case["sync"] else None)
        together = train(network(**kind), data, case["batch"], comm)
        set_batch_norm_sync(None)
        results[name] = comm.allgather(np.array([max_difference(alone, together)])).ravel().tolist()
    # Evaluation on shards: the counts of one process, exactly.
    model = together
    comm.broadcast_state(model)              # (as the Trainer does after every epoch: rank 0's batchnorm statistics)
    plain = DataLoader(data, 10, transform=ToFloat(), prefetch=False)
    sharded = DataLoader(data, 10, transform=ToFloat(), prefetch=False)
    sharded.shard = (comm.rank, comm.size)
    model.float()
    loss1, acc1, conf1 = evaluate(model, plain, 3)
    lossk, acck, confk = evaluate(model, sharded, 3, reduce=comm.reduce_evaluation)
    results["eval"] = dict(acc_one=acc1, acc_sharded=acck, confusion_equal=bool(np.array_equal(conf1, confk)),
                           loss_difference=abs(loss1 - lossk))
    # The weights are the same bits on every worker.
    flat = np.concatenate([p.data.ravel() for p in model.parameters()]).astype(np.float64)
    results["workers_identical"] = bool((comm.allgather(flat) == flat).all())
    results["size"] = comm.size
    if comm.is_writer:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
