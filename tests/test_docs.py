"""Every ```python block in docs/*.md and README.md runs (blocks of one file share a namespace, in order)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NEEDS = re.compile(r"^<!-- needs: ([\w. ]+) -->$", re.M)     # a page's optional packages: skipped without them


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_doc_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = path.read_text()
    for module in " ".join(NEEDS.findall(text)).split():
        pytest.importorskip(module, reason=f"{path.name} needs {module}")
    ns = {"__name__": f"doc_{path.stem}"}
    for i, code in enumerate(BLOCK.findall(text)):
        exec(compile(code, f"{path.name}[block {i}]", "exec"), ns)


def test_docs_exist():
    assert len(DOCS) >= 5
