"""Packaging: every third-party package the runtime imports is a declared dependency (an `ast` scan of
rallrec_jax/, configs/ and experiments/), torch is not among them, the console scripts and the experiments/
wrappers reach the mains in rallrec_jax/cli.py, and a built wheel carries configs/ and the kernel source."""
import ast
import importlib.metadata
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest

from rallrec_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNTIME = ("rallrec_jax", "configs", "experiments")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _canonical(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))


def _local_modules() -> set[str]:
    """Our own top-level names: the packages, and the modules beside each experiments/ script."""
    return set(RUNTIME) | {p.stem for p in (ROOT / "experiments").glob("*.py")}


def runtime_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it (at module level or inside a function), stdlib and ours left out."""
    found: dict[str, set[str]] = {}
    local = _local_modules()
    for folder in RUNTIME:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_a_declared_dependency():
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    imports = runtime_imports()
    assert {"jax", "flax", "transformers", "tokenizers", "gguf", "absl", "orbax"} <= set(imports)
    assert "torch" not in imports, f"torch is imported at run time by {sorted(imports.get('torch', ()))}"
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in sorted(imports.items()):
        names = {_canonical(d) for d in distributions.get(module, ())}
        if not names:
            missing[module] = f"not installed, so its distribution is unknown (imported by {sorted(files)})"
        elif not names & declared:
            missing[module] = f"distribution {sorted(names)} is not in pyproject's dependencies ({sorted(files)})"
    assert missing == {}
    # What transformers needs for the chat templates without depending on it is declared too.
    assert {"jinja2", "huggingface-hub", "tokenizers"} <= declared


def test_torch_only_in_the_test_and_bench_extras():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert all(_requirement_name(r) != "torch" for r in PYPROJECT["project"]["dependencies"])
    assert {name for name, reqs in extras.items() if any(_requirement_name(r) == "torch" for r in reqs)} == \
        {"test", "bench"}
    assert extras["cuda12"] == ["jax[cuda12]>=0.10.2"] and extras["tpu"] == ["jax[tpu]>=0.10.2"]
    jax_floor = next(r for r in PYPROJECT["project"]["dependencies"] if _requirement_name(r) == "jax")
    assert extras["cuda12"][0].endswith(jax_floor.removeprefix("jax"))  # the same jax the core asks for


def test_console_scripts_and_wrappers_reach_the_mains():
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {name: f"rallrec_jax.cli:{fn.__name__}" for name, fn in cli.COMMANDS.items()}
    for target in scripts.values():
        assert callable(getattr(cli, target.split(":")[1]))
    wrappers = sorted(p for p in (ROOT / "experiments").glob("*.py") if p.stem != "_main")
    assert {p.stem for p in wrappers} == {fn.__name__ for fn in cli.COMMANDS.values()}
    for path in wrappers:
        assert f"cli.{path.stem}()" in path.read_text(), path


def test_help_lists_a_binarys_own_flags():
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "prepare_data.py"), "--helpfull"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    for flag in ("--[no]force:", "--[no]log_to_console:", "--[no]progress:", "--workdir:", "--config:",
                 "--distributed:", "--coordinator:", "--num_processes:", "--process_id:"):  # every binary's
        assert flag in out.stdout, flag
    assert "--stages" not in out.stdout and "--adapters" not in out.stdout


def test_wheel_carries_configs_the_kernel_source_and_the_scripts(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"building offline needs setuptools >= 77 (PEP 639 license), have {setuptools.__version__}")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, cwd=tmp_path, timeout=600)
    wheel = next(tmp_path.glob("rallrec_jax-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = z.read(meta).decode()
    assert "rallrec_jax/retrieval/csrc/csr_spmm.cc" in names
    assert {"configs/__init__.py", "configs/quickstart.py", "configs/base_data.py"} <= names
    assert "rallrec_jax/llm/gguf_tokenizer.py" in names and "rallrec_jax/cli.py" in names
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
    assert "rallrec-pipeline = rallrec_jax.cli:pipeline" in entry
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = {_requirement_name(r) for r in requires if "extra ==" not in r}
    assert "torch" not in core and {"jinja2", "tokenizers", "huggingface-hub"} <= core
