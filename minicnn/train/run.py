"""``Run``: what every training needs around its loop: the folder, the stop, checkpoints, metrics.

The classifier (``Trainer``), the DCGAN (``train.gan``) and image-to-image
training (``train.image2image``) each write their learning as a loop over
batches, one epoch at a time; a ``Run`` does the bookkeeping they share::

    run = Run(cfg, FORMAT, "a GAN checkpoint", RUN_DEFINING, METRICS_FIELDS, log=log)
    ...                                              # (checked --out and, with --resume, last.npz: now build)
    run.track(model=model, optimizer=optimizer)      # what last.npz holds; --resume loads it back here
    with run:                                        # creates --out; Ctrl-C / SIGTERM stop after the step
        for epoch in run.epochs():                   # from where the run stands (0, or the resumed epoch)
            for x, y in run.batches(loader):         # from run.step on; counts steps, progress, estimate
                ...one step...
                run.add(loss_sum=loss * len(x), seen=len(x))   # the epoch's running sums
            run.end_epoch(row)                       # a metrics row: history, last.npz, metrics.csv
    if run.interrupted:
        return None

What a checkpoint holds (``minicnn.checkpoint.write_checkpoint``): the
tracked objects' ``state_dict`` (model, optimizer, schedule, ...), the
position (``epoch`` done, ``step`` into the next one), the sums of that
partial epoch, the history (one row per epoch) and the run's settings.
There is no random state to save: every random draw of step ``k`` of
epoch ``e`` (shuffle, augmentation, dropout, noise) comes from a generator
seeded by ``(seed, e, k)``, so the position *is* the state of the
randomness, and a resumed run ends with the same weights as one that was
never stopped.

A stop: the first Ctrl-C or SIGTERM lets the current step finish, then
saves ``last.npz`` and ends the run (``--max-minutes`` too); a second one
aborts at once, writing nothing more.
"""
import os
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

from ..checkpoint import read_for_resume, write_checkpoint
from ..errors import TrainingError
from .reports import write_rows

__all__ = ["Run", "RunConfig", "Stop", "check_out_folder", "format_duration", "estimate_message", "ESTIMATE_AFTER_STEPS"]

ESTIMATE_AFTER_STEPS = 20      # the time estimate is printed after this many timed steps


@dataclass
class RunConfig:
    """The settings every run has; a training's config adds its own (``GANConfig(RunConfig)``)."""
    data: str = None                  # --data (default: the usual places, see datasets)
    epochs: int = 5
    batch_size: int = 64
    device: str = "cpu"
    seed: int = 0                     # every random draw of step k of epoch e comes from (seed, e, k)
    out: str = "runs/run"             # the run folder
    resume: bool = False              # continue the run saved in out/last.npz
    progress: bool = True             # progress bars


class Stop(Exception):
    """Raised between two steps (Ctrl-C, SIGTERM, --max-minutes): ``Run`` saves a consistent last.npz."""


def check_out_folder(out):
    """Refuse an output folder that cannot be written, before any work; creates nothing.

    ``out`` may exist (a writable folder) or not (then its first existing
    parent must be a writable folder). Raises TrainingError naming ``--out``.
    """
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainingError(f"--out {out} is a file, not a folder; choose a folder for the run "
                            f"(it is created if needed)")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise TrainingError(f"--out {out}: cannot create it, {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".minicnn-write-test-", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = "the folder is" if parent == os.path.abspath(out) else f"cannot create it: {parent} is"
        raise TrainingError(f"--out {out}: {where} not writable ({e.strerror}); choose another --out") from None


def format_duration(seconds):
    """``3725`` -> ``'1 h 2 min'``, ``75`` -> ``'1 min 15 s'``, ``8`` -> ``'8 s'``."""
    seconds = int(round(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def estimate_message(seconds_per_step, steps_left, epochs, steps_done=0, hint=""):
    """The line printed after the first steps: the training time still to go, and of the whole run.

    ``steps_done``: the steps already behind (the first timed ones, and a
    resumed run's earlier ones). A run of an hour or more says so plainly,
    and how to stop it or shorten it (``hint``).
    """
    left = seconds_per_step * steps_left
    total = seconds_per_step * (steps_left + steps_done)
    line = (f"estimated {format_duration(left)} remaining ({format_duration(total)} in all for {epochs} epochs; "
            f"{seconds_per_step:.3g} s per step, {steps_left:,} steps to go; validation not included)")
    if left >= 3600:
        line += ("\nThis is a long run. Ctrl-C or SIGTERM saves a checkpoint (continue with --resume), "
                 "--max-minutes M caps it" + (f"; {hint}" if hint else "") + ".")
    return line


class Run:
    """One training run in its folder ``cfg.out``: position, history, checkpoints, stop, metrics.

    ``cfg``: a dataclass of settings with ``out``, ``epochs``, ``resume``,
    ``progress`` (a ``RunConfig``, or one with these fields; optionally
    ``max_minutes``); saved in every checkpoint.
    ``fmt``/``kind``: the checkpoint's format marker and its name in
    messages; ``run_defining``: the settings ``--resume`` may not change
    (``saved_defaults``: their values in checkpoints that predate them);
    ``metrics_fields``: the columns of metrics.csv.

    Made before any work: it refuses an unwritable ``--out``, an existing
    run without ``--resume`` and, with ``--resume``, a missing checkpoint or
    changed settings (``self.checkpoint`` is then the dict read back).
    """

    def __init__(self, cfg, fmt, kind, run_defining, metrics_fields, log=print, saved_defaults=None, estimate_hint=""):
        self.cfg, self.fmt, self.kind, self.log = cfg, fmt, kind, log
        self.metrics_fields, self.estimate_hint = metrics_fields, estimate_hint
        self.out = os.fspath(cfg.out)
        self.last_path = os.path.join(self.out, "last.npz")
        self.best_path = os.path.join(self.out, "best.npz")
        check_out_folder(self.out)
        if not cfg.resume and os.path.exists(self.last_path):
            raise TrainingError(f"{self.out} already holds a run (last.npz); continue it with --resume, "
                                f"or choose another --out (nothing was overwritten)")
        self.checkpoint = (read_for_resume(self.last_path, fmt, kind, cfg, run_defining, saved_defaults)
                           if cfg.resume else None)
        self.resumed = self.checkpoint is not None
        self.epoch, self.step, self.history, self.partial = 0, 0, [], {"elapsed": 0.0}
        self.parts = {}
        self.stop_reason = None              # None, 'SIGINT', 'SIGTERM' or 'max-minutes'
        self.interrupted = False             # stopped by a signal (the caller returns None, the CLI 130)
        self._created, self._previous = None, {}
        # Data-parallel training (minicnn.distributed): only the writer (rank 0) writes files, and
        # ``agree(stop_reason)`` returns the workers' common decision, so that all stop at the same step.
        self.writer, self.agree = True, None

    # ---- what a checkpoint holds ------------------------------------------------------
    def track(self, **parts):
        """Name what every checkpoint holds besides the position: objects with a ``state_dict``
        (model, optimizer, schedule), plain values, or functions giving the value at save time.

        A resumed run loads the checkpoint's state into each object now, and
        takes back its position, history and partial epoch (and says so).
        """
        self.parts.update(parts)
        ckpt = self.checkpoint
        if ckpt is None:
            return
        for name, part in parts.items():
            if hasattr(part, "load_state_dict") and name in ckpt:
                part.load_state_dict(ckpt[name])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.history, self.partial = ckpt["history"], ckpt["partial_epoch"]
        self.log(f"resuming {self.last_path} at epoch {self.epoch + 1}, step {self.step}")

    def save(self, path=None):
        """Write ``path`` (default last.npz: also metrics.csv) atomically with everything a resumed run needs."""
        if not self.writer:
            return
        self.make_folder()
        parts = {name: part() if callable(part) and not hasattr(part, "state_dict") else part
                 for name, part in self.parts.items()}
        write_checkpoint(path or self.last_path, self.fmt, config=self._config(), epoch=self.epoch,
                         step=self.step, history=self.history, partial_epoch=self.partial,
                         **{k: v for k, v in parts.items() if v is not None})
        if path is None or path == self.last_path:
            write_rows(os.path.join(self.out, "metrics.csv"), self.history, self.metrics_fields)

    def _config(self):
        return {k: v for k, v in asdict(self.cfg).items() if k != "extra"}

    def kept_checkpoint(self):
        """For error messages: which checkpoint a failed run leaves behind."""
        if os.path.isfile(self.last_path):
            return f"the last good checkpoint ({self.last_path}) was kept"
        return "no checkpoint was written yet"

    # ---- the loop -----------------------------------------------------------------------
    def epochs(self):
        """The epochs still to train, from ``self.epoch``; a stop request between two epochs ends the run.

        (A signal during the last step of the last epoch ends it too, before
        any test; ``--max-minutes`` reached there does not: the run is done.)
        """
        while self.epoch < self.cfg.epochs:
            if self.step == 0:
                self.partial = {"elapsed": 0.0}
            yield self.epoch
            self._check_deadline()
            self._agree()
            if self.stop_reason is not None and (self.epoch < self.cfg.epochs or self.stop_reason != "max-minutes"):
                raise Stop

    def batches(self, loader, show=None):
        """The batches of epoch ``self.epoch`` from batch ``self.step`` on; ``self.step`` counts each one done.

        After every step: the progress bar (``show(partial)`` gives its
        numbers), the time estimate after the first steps, and the stop on a
        signal or at --max-minutes (``Stop``, after the epoch's last step the
        epoch finishes first).
        """
        from tqdm import tqdm

        n = len(loader)
        loader.set_epoch(self.epoch, start_batch=self.step)
        bar = tqdm(total=n, initial=self.step, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                   disable=not self.cfg.progress, leave=False, dynamic_ncols=True)
        t0 = time.perf_counter() - self.partial.setdefault("elapsed", 0.0)
        batches = iter(loader)
        try:
            for batch in batches:
                yield batch
                self.step += 1
                self.partial["elapsed"] = time.perf_counter() - t0
                bar.update(1)
                if show is not None and (self.step % 10 == 0 or self.step == n):
                    bar.set_postfix(show(self.partial))
                self._after_step(n)
                self._agree()
                if self.stop_reason is not None and self.step < n:
                    raise Stop
        finally:
            bar.close()
            if hasattr(batches, "close"):
                batches.close()        # now, not at garbage collection: the loader's thread is joined here

    def add(self, **sums):
        """Add to the running sums of this epoch (kept in checkpoints: a resumed epoch reports all its steps)."""
        for k, v in sums.items():
            self.partial[k] = self.partial.get(k, 0) + v

    def end_epoch(self, row, line=None, save=True):
        """Record the epoch's metrics ``row`` (and print ``line``); the next epoch starts at step 0.

        ``save``: write last.npz and metrics.csv now (the classifier saves
        them itself, after best.npz).
        """
        if line is not None:
            self.log(line)
        self.history.append(row)
        self.epoch, self.step, self.partial = self.epoch + 1, 0, {"elapsed": 0.0}
        if save:
            self.save()

    def _agree(self):
        if self.agree is not None:          # data-parallel: every worker stops at the same step
            self.stop_reason = self.agree(self.stop_reason)

    # ---- time ---------------------------------------------------------------------------
    def _after_step(self, steps_per_epoch):
        """The time estimate after the first steps (the first, warm-up, step is not timed); the --max-minutes cap."""
        now = time.perf_counter()
        self._steps_run += 1
        if self._steps_run == 1:
            self._timing_start = now
        elif self._steps_run == 1 + ESTIMATE_AFTER_STEPS:
            per_step = (now - self._timing_start) / ESTIMATE_AFTER_STEPS
            done = self.epoch * steps_per_epoch + self.step
            self.log(estimate_message(per_step, self.cfg.epochs * steps_per_epoch - done, self.cfg.epochs,
                                      steps_done=done, hint=self.estimate_hint))
        self._check_deadline(now)

    def _check_deadline(self, now=None):
        if self._deadline is not None and self.stop_reason is None and \
                (now if now is not None else time.perf_counter()) >= self._deadline:
            self.stop_reason = "max-minutes"

    # ---- the folder and the stop --------------------------------------------------------
    def make_folder(self):
        """Create ``--out`` (and missing parents); remember what was created, to remove it if nothing is written."""
        if not self.writer:
            return
        if self._created is None:
            self._created = []
            path = os.path.abspath(self.out)
            while not os.path.exists(path):
                self._created.append(path)
                path = os.path.dirname(path)
        os.makedirs(self.out, exist_ok=True)

    def _remove_empty_out(self):
        for path in self._created or []:                # innermost first
            try:
                os.rmdir(path)                          # only succeeds on an empty folder
            except OSError:
                break

    def _on_signal(self, signum, frame):
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.stop_reason in ("SIGINT", "SIGTERM"):      # a second signal: stop right now, write nothing
            for sig in self._previous:                      # (and let no third one break the unwinding)
                signal.signal(sig, signal.SIG_IGN)
            self.log(f"\n{name} again: aborted, nothing more is saved")
            raise KeyboardInterrupt
        self.stop_reason = signal.Signals(signum).name
        self.log(f"\n{name}: finishing this step, then saving a checkpoint ({name} again to abort)")

    def __enter__(self):
        """Create the folder, and turn Ctrl-C / SIGTERM into a stop after the current step (main thread only)."""
        self.make_folder()
        self.stop_reason, self.interrupted = None, False
        self._steps_run, self._timing_start = 0, None
        max_minutes = getattr(self.cfg, "max_minutes", None)
        self._deadline = time.perf_counter() + 60 * max_minutes if max_minutes is not None else None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, kind, error, traceback):
        """A ``Stop`` saves last.npz and says how to continue; any other error leaves no empty folder behind.

        The handlers stay in place while last.npz is written: a second
        Ctrl-C then abandons the write (the previous file stays as it was).
        """
        try:
            if kind is None or not issubclass(kind, Stop):
                if kind is not None:
                    self._remove_empty_out()
                return False
            self.save()
            where = f"epoch {self.epoch + 1}, step {self.step}"
            if self.stop_reason == "max-minutes":
                self.log(f"\nstopped at the --max-minutes {self.cfg.max_minutes:g} cap at {where}: saved "
                         f"{self.last_path} (continue with the same command plus --resume)")
            else:
                self.interrupted = True
                self.log(f"\ninterrupted ({self.stop_reason}) at {where}: saved {self.last_path}; "
                         f"continue with the same command plus --resume")
            return True
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous = {}
