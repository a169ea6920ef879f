"""The config per runtime (CPU, GPU, TPU) that the Colab notebook picks."""
import pathlib

import pytest

from rallrec_jax import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cpu_is_the_quickstart_as_it_is():
    path, overrides = runtime.config_for_runtime("cpu")
    assert pathlib.Path(path) == ROOT / "configs" / "quickstart.py" and overrides == {}
    config = runtime.load_config(path, overrides)
    assert config.model.dtype == "float32" and "platform" not in config.mesh


@pytest.mark.parametrize("platform", ["gpu", "TPU"])
def test_accelerators_get_bfloat16_on_their_mesh(platform):
    path, overrides = runtime.config_for_runtime(platform)
    assert pathlib.Path(path).name == "quickstart.py"
    config = runtime.load_config(path, overrides)
    assert config.mesh.to_dict() == {"data": -1, "fsdp": 1, "tensor": 1, "platform": platform.lower()}
    assert config.model.dtype == config.reasoning.dtype == "bfloat16"
    assert config.model.param_dtype == "float32"  # LoRA tuning keeps float32 parameters
    assert config.retrieval.use_descriptions is True


def test_unknown_platform_and_unknown_field_are_named():
    with pytest.raises(ValueError, match=r"no config for platform 'metal'; known: \('cpu', 'gpu', 'tpu'\)"):
        runtime.config_for_runtime("metal")
    path, _ = runtime.config_for_runtime("cpu")
    with pytest.raises(KeyError, match=r"'model.dtpye' names no field of the config \(model.dtpye is absent\)"):
        runtime.load_config(path, {"model.dtpye": "bfloat16"})


def test_variant_of_a_config_file(monkeypatch):
    monkeypatch.setenv("RALLREC_TINY_LLM", "/some/tiny/llm")
    config = runtime.load_config(ROOT / "configs" / "test.py", {"eval_size": 7}, variant="tiny")
    assert config.eval_size == 7 and config.model.path == "/some/tiny/llm"
