"""The Colab notebook runs headless, top to bottom, on the tiny config."""
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from tests.tiny_llm import make_tiny_llm

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_notebook_runs_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("RALLREC_TINY_LLM", str(make_tiny_llm(tmp_path / "llm")))
    monkeypatch.setenv("RALLREC_NOTEBOOK_CONFIG", "test_tiny")
    monkeypatch.setenv("RALLREC_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("RALLREC_REPO", str(ROOT))
    nb = nbformat.read(ROOT / "notebooks" / "rallrec_jax_colab.ipynb", as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "retrieved (" in text and "target:" in text
    shown = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "display_data"]
    assert any("RALLRec+" in o["data"].get("text/markdown", "") for o in shown)
