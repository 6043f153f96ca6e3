"""The layer order of DESIGN.md, checked on the source: every import runs up the order, never back down.

Each module of minicnn belongs to one layer (``LAYERS``, top first). A
module may import from its own layer and the layers above it; an import
of a layer below it is a bug in the architecture (backend importing
autograd to recognise a Tensor was one). Imports inside functions count
too: a lazy import is still a dependency. The one documented exception
is ``EXCEPTIONS``. The source is parsed with ``ast``; nothing is imported.

Also checked: no module imports a private name (``_name``) of a sibling
module (a private helper *module*, ``_common.py``, is fine), and the
profiler reaches the engine only through ``autograd.set_op_hooks``.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minicnn"

# Top first; a module may import from its own row and the rows above it.
LAYERS = [
    ("_version", "errors", "utils", "speed", "reference"),   # standard library and NumPy only
    ("backend",),                                              # numpy / cupy, devices, dtypes
    ("cuda",),                                                 # raw kernels, loaded through backend
    ("autograd",),                                             # Tensor, Function, backward
    ("functional", "profiler"),                                # the ops; the op profiler
    ("nn",),
    ("optim",),
    ("data",),
    ("models",),
    ("gradcheck", "serialization", "plotting", "analysis"),  # plotting: every figure; analysis: the shared helpers
    ("explain", "attacks", "synthesize"),                      # analysis of a trained model
    ("train", "checkpoint"),                                   # the loop (adversarial training uses attacks)
    ("doctor", "summary"),
    ("*",),                                                    # any other module: an application on top
    ("cli", "__main__", ""),                                   # "" is the package itself (minicnn/__init__.py)
]
LEVEL = {name: i for i, row in enumerate(LAYERS) for name in row}


def level(name):
    """The layer number of a top-level module name; a module not in LAYERS is an application ("*")."""
    return LEVEL.get(name, LEVEL["*"])

# (importer, imported): the documented exceptions to the order.
EXCEPTIONS = {
    # Tensor's operators (x + y, x @ w, x.sum()) are the ops of functional; autograd
    # imports functional once, at its very end, after Tensor and Function exist.
    ("autograd", "functional"),
}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path):
    """(line, absolute module name, imported names) of every import of a minicnn module in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "minicnn":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "minicnn":
                continue
            names = [a.name for a in node.names]
            if node.module is None:          # from . import x, y: modules x and y
                for n in names:
                    yield node.lineno, f"{target}.{n}", []
            else:
                yield node.lineno, target, names


def layer_of(module):
    """The layer key of ``minicnn.a.b``: "a" (or "" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def all_modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_core_layers_exist():
    present = {layer_of(module_name(p)) for p in all_modules()}
    core = {"backend", "speed", "autograd", "functional", "nn", "optim", "reference", "cuda"}
    assert core <= present, core - present


def test_imports_only_run_up_the_layer_order():
    wrong = []
    for path in all_modules():
        src = layer_of(module_name(path))
        for line, target, _ in imports_of(path):
            dst = layer_of(target)
            if level(dst) > level(src) and (src, dst) not in EXCEPTIONS:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {src or 'minicnn'} "
                             f"(layer {level(src)}) imports {target} (layer {level(dst)}, below it)")
    assert not wrong, "imports that run back down the layer order:\n" + "\n".join(wrong)


def test_backend_does_not_import_autograd():
    targets = [t for _, t, _ in imports_of(PACKAGE / "backend.py")]
    assert not any(layer_of(t) == "autograd" for t in targets), targets


def is_private(name):
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_imported_across_modules():
    wrong = []
    for path in all_modules():
        here = module_name(path)
        for line, target, names in imports_of(path):
            if target == here or any(is_private(part) for part in target.split(".")[1:]):
                continue                      # a private helper module (_common.py) is for sharing
            for n in names:
                if is_private(n):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: from {target} import {n}")
    assert not wrong, "private names imported from another module:\n" + "\n".join(wrong)


def test_the_profiler_hooks_the_engine_through_set_op_hooks_only():
    tree = ast.parse((PACKAGE / "profiler.py").read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "autograd"}
    assert used == {"set_op_hooks"}, used
    assert not any(layer_of(t) == "profiler" for _, t, _ in imports_of(PACKAGE / "autograd.py"))


def test_the_checker_sees_a_back_up_import(tmp_path, monkeypatch):
    # The checker itself: a fake backend that imports autograd lazily is reported.
    import sys
    fake = tmp_path / "minicnn"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "backend.py").write_text("def f():\n    from .autograd import Tensor\n")
    (fake / "autograd.py").write_text("from .backend import f\nfrom .functional import _private\n"
                                      "from . import backend\nbackend._secret\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"backend \(layer 1\) imports minicnn.autograd \(layer 3"):
        test_imports_only_run_up_the_layer_order()
    with pytest.raises(AssertionError, match=r"from minicnn.functional import _private"):
        test_no_private_names_imported_across_modules()
    with pytest.raises(AssertionError, match=r"backend._secret"):
        test_no_private_attributes_read_across_modules()


def module_aliases(path):
    """Names that a file binds to minicnn modules (``from . import backend``, ``import minicnn.nn as mnn``)."""
    aliases = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("minicnn")):
            for a in node.names:
                aliases.setdefault(a.asname or a.name, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("minicnn"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name
    return aliases


def test_no_private_attributes_read_across_modules():
    # other_module._name counts as a private import too (DESIGN.md).
    wrong = []
    for path in all_modules():
        aliases = module_aliases(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and is_private(node.attr)
                    and not is_private(aliases[node.value.id].split(".")[-1])):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, "private names of another module read:\n" + "\n".join(wrong)
