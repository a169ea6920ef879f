"""Typed stage settings from configs: every stage refuses an unknown field by name."""
import ml_collections
import pytest

from rallrec_jax.generation import deepfm
from rallrec_jax.retrieval import lightgcn, ssl


@pytest.mark.parametrize("build,label,field", [(lightgcn.as_config, "LightGCN", "dim"),
                                              (ssl.as_config, "SSL", "hidden"),
                                              (deepfm.DeepFMConfig.from_any, "DeepFM", "embed_dim")])
def test_settings_from_configdict_mapping_or_instance(build, label, field):
    default = build(None)
    from_dict = build(ml_collections.ConfigDict({field: 7}))
    assert getattr(from_dict, field) == 7 and build({field: 7}) == from_dict
    assert build(default) is default
    with pytest.raises(ValueError, match=rf"unknown {label} config fields \['typo'\]; known: .*{field}"):
        build({"typo": 1})


def test_deepfm_hidden_from_a_configdict_list_is_a_tuple():
    assert deepfm.DeepFMConfig.from_any(ml_collections.ConfigDict({"hidden": [8, 4]})).hidden == (8, 4)
