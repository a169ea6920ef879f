"""Typed stage settings from configs: every stage refuses an unknown field by name; the binaries answer an
override of a missing field, or a size out of range, with one line naming it (no traceback, no stage run)."""
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

import configs.amazon
import configs.bookcrossing
import configs.movielens
import configs.quickstart
import configs.test
from rallrec_jax import pipeline, settings
from rallrec_jax.generation import deepfm, finetune
from rallrec_jax.retrieval import lightgcn, ssl


@pytest.mark.parametrize("build,label,field", [(lightgcn.as_config, "LightGCN", "dim"),
                                              (ssl.as_config, "SSL", "hidden"),
                                              (deepfm.DeepFMConfig.from_any, "DeepFM", "embed_dim"),
                                              (finetune.FinetuneSettings.from_config, "finetune", "k_history")])
def test_settings_from_configdict_mapping_or_instance(build, label, field):
    default = build(None)
    from_dict = build(ml_collections.ConfigDict({field: 7}))
    assert getattr(from_dict, field) == 7 and build({field: 7}) == from_dict
    assert build(default) is default
    with pytest.raises(ValueError, match=rf"unknown {label} config fields \['typo'\]; known: .*{field}"):
        build({"typo": 1})


def test_deepfm_hidden_from_a_configdict_list_is_a_tuple():
    assert deepfm.DeepFMConfig.from_any(ml_collections.ConfigDict({"hidden": [8, 4]})).hidden == (8, 4)


# ----------------------------------------------------------------------------- the binaries' config errors
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _binary(name, *args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / name), *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_an_override_of_a_missing_field_is_one_line_naming_it(tmp_path):
    proc = _binary("prepare_data.py", "--config", "configs/test.py", "--workdir", str(tmp_path),
                   "--config.finetune.nonexistent=1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: --config.finetune.nonexistent=1: the config has no field "
                               "'finetune.nonexistent' (finetune has no 'nonexistent').")
    assert "learning_rate" in lines[0]  # the fields it has
    typo = _binary("prepare_data.py", "--config", "configs/test.py", "--workdir", str(tmp_path),
                   "--config.finetune.learning_rat=0.1")
    assert "Did you mean 'finetune.learning_rate'?" in typo.stderr and typo.returncode == 2
    assert not (tmp_path / "data").exists()


def test_a_negative_batch_size_stops_before_any_stage(tmp_path, tiny_llm):
    proc = _binary("evaluate.py", "--config", "configs/test.py:tiny", "--workdir", str(tmp_path),
                   "--config.evaluate.batch_size=-8", env={"RALLREC_TINY_LLM": str(tiny_llm)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: config out of range: evaluate.batch_size=-8 must be >= 1 (set it in the "
                                   "config file or with --config.<field>=<value>)")
    assert not (tmp_path / "data").exists()
    config = configs.test.get_config()
    config.evaluate.batch_size = -8
    config.reasoning.num_traces = 0
    with pytest.raises(ValueError, match=r"evaluate\.batch_size=-8 must be >= 1; reasoning\.num_traces=0 must"):
        settings.check_config(config)
    with pytest.raises(ValueError, match="evaluate.batch_size=-8"):
        pipeline.Pipeline(config, tmp_path / "lib").run(["data"])
    for module in (configs.test, configs.quickstart, configs.movielens, configs.bookcrossing, configs.amazon):
        settings.check_config(module.get_config())  # the shipped configs are in range
