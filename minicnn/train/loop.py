"""The training loop: gradient descent, one batch at a time.

Everything a network learns comes from repeating five lines::

    logits = model(images)             # forward: scores for every class
    loss = loss_fn(logits, labels)     # how wrong they are, as one number
    optimizer.zero_grad()              # forget the previous step's gradients
    loss.backward()                    # p.grad = d loss / d p, for every parameter p
    optimizer.step()                   # move every p a little against p.grad

``fit`` is exactly that loop, over the batches of a loader, for some
epochs, with an optional learning-rate schedule stepped after every step.
``minicnn.train.Trainer`` (behind ``minicnn train``) calls this same
``fit`` one epoch at a time and adds, around it, what a long run needs:
checkpoints, resuming, a progress bar, a clean stop on Ctrl-C.

Example (a tiny problem, a few seconds)::

    from minicnn import nn, optim
    from minicnn.train import fit
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = fit(model, loader, optimizer, epochs=5)   # mean training loss of each epoch
"""
from .. import functional as F
from .finetune import keep_frozen_statistics

__all__ = ["fit"]


def fit(model, loader, optimizer, loss_fn=F.cross_entropy, epochs=1, scheduler=None, on_step=None):
    """Train ``model`` in place on ``loader``; returns the mean training loss of each epoch.

    Args:
        model: a Module that maps a batch of images to logits.
        loader: ``(images, labels)`` batches, iterated once per epoch (a ``DataLoader``).
        optimizer: an optimizer over the model's parameters (``minicnn.optim``).
        loss_fn: ``loss_fn(logits, labels)`` returns a scalar Tensor (default: cross-entropy).
        epochs: passes over ``loader``.
        scheduler: a learning-rate schedule stepped after every step (or None).
        on_step: called as ``on_step(logits, labels, loss)`` after every step;
            returning True stops training there (the last loss returned is
            then the mean over that epoch's steps so far).
    """
    losses = []
    for _ in range(epochs):
        model.train()                          # dropout on, batchnorm uses batch statistics
        keep_frozen_statistics(model)          # ...except batchnorm layers whose parameters are all frozen
        total, seen = 0.0, 0
        for images, labels in loader:
            logits = model(images)             # forward
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()                    # backward: fills p.grad
            optimizer.step()                   # update: p -= lr * (step from p.grad)
            if scheduler is not None:
                scheduler.step()               # the learning rate of the next step
            total, seen = total + loss.item() * labels.shape[0], seen + labels.shape[0]
            if on_step is not None and on_step(logits, labels, loss):
                return losses + [total / seen]
        losses.append(total / max(seen, 1))
    return losses
