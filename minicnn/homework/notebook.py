"""Notebooks in and out, with the standard library's ``json`` (a ``.ipynb`` file is JSON).

``write_notebook`` turns a skeleton into a notebook: the docstring as a
markdown cell, the code as a code cell, the self-check as a last cell.
``notebook_source`` reads a student's notebook back for the grader: it keeps
only the imports and the function and class definitions of the code cells
(found with ``ast``) and never runs any other cell.
"""
import ast
import json


def _cell(kind, text):
    cell = {"cell_type": kind, "metadata": {}, "source": text.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def write_notebook(path, skeleton):
    """Write ``skeleton`` (a skeleton file's text) to ``path`` as a Jupyter notebook (nbformat 4)."""
    tree = ast.parse(skeleton)
    doc = ast.get_docstring(tree) or ""
    lines = skeleton.splitlines(keepends=True)
    body_start = tree.body[1].lineno - 1 if isinstance(tree.body[0], ast.Expr) else 0
    main = next((n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)), None)
    code = "".join(lines[body_start:(main.lineno - 1) if main else len(lines)]).strip() + "\n"
    cells = [_cell("markdown", doc), _cell("code", code)]
    if main:
        check = "\n".join(ast.unparse(n) for n in main.body)
        cells.append(_cell("markdown", "A tiny self-check (the grader runs many more cases):"))
        cells.append(_cell("code", check + "\n"))
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"},
                                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    with open(path, "w") as f:
        json.dump(nb, f, indent=1)
        f.write("\n")


KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def notebook_source(path):
    """The imports and definitions of a notebook's code cells as one Python source (nothing is run).

    Lines that are IPython magics or shell commands (``%...``, ``!...``) are
    dropped; a cell that still does not parse is skipped (its definitions
    are then missing, which the grade reports as a missing function).
    """
    try:
        with open(path) as f:
            nb = json.load(f)
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable Jupyter notebook ({type(e).__name__}: {e})") from None
    parts = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        src = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        parts.extend(ast.get_source_segment(src, node) for node in tree.body if isinstance(node, KEEP))
    return "\n\n\n".join(p for p in parts if p) + "\n"
