"""minicnn.doctor: the debugging checklist of the lectures, run for you.

"My network isn't working and I have no idea what to do": each item of the
checklist (you forgot to normalise your data; the wrong activation on the
final layer; bad gradients; badly initialised weights; an incorrect
learning rate; too large a batch; no regularisation) and of Karpathy's
recipe (check the loss at init, overfit one batch, make sure examples in a
batch do not leak into each other) is a small check here::

    from minicnn import doctor
    report = doctor.examine(model, train_loader,
                            optimizer_factory=lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))
    print(report)            # one line per check: OK / WARN / FAIL, the number, what it means, what to try
    report.ok                # True when nothing FAILs
    report.save("doctor")    # report.md, report.json (figures go there too with out="doctor")

The model is never trained or changed (each check uses a deep copy). See
``examine`` for the arguments and ``minicnn/doctor/examine.py`` for the
list of checks, one module each. ``minicnn doctor`` runs it from the
command line; ``minicnn.summary`` (``minicnn summary``) is its companion
for shapes, parameters, MACs and receptive fields.
"""
from .context import Context, Settings
from .examine import CHECKS, examine
from .report import FAIL, OK, WARN, CheckResult, Report

__all__ = ["examine", "CHECKS", "Settings", "Context", "Report", "CheckResult", "OK", "WARN", "FAIL"]
