"""The Colab notebook runs headless, top to bottom, on the tiny config."""
import json
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from tests.tiny_llm import make_tiny_llm

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_first_code_cell_sets_the_source_and_picks_the_runtime_config(monkeypatch):
    """The notebook is valid JSON; its first code cell starts with the one setting, RALLREC_SOURCE, and (outside
    Colab, where it installs nothing) picks this runtime's config."""
    from rallrec_jax import runtime

    nb = json.loads((ROOT / "notebooks" / "rallrec_jax_colab.ipynb").read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code = "".join(first["source"])
    assert [line for line in code.splitlines() if not line.startswith("#")][0] == 'RALLREC_SOURCE = ""'
    monkeypatch.delenv("RALLREC_NOTEBOOK_CONFIG", raising=False)
    monkeypatch.setenv("RALLREC_REPO", str(ROOT))
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    namespace: dict = {}
    exec(compile(code, "first cell", "exec"), namespace)
    import jax

    assert (namespace["CONFIG_PATH"], namespace["OVERRIDES"]) == runtime.config_for_runtime(jax.default_backend())
    assert namespace["source"] == str(ROOT) and os.path.isfile(namespace["CONFIG_PATH"])


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
