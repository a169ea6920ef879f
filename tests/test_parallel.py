import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from rallrec_jax import parallel


def test_eight_fake_devices():
    assert jax.device_count() == 8


def test_mesh_shape_resolves_free_axis():
    assert parallel.mesh_shape_from_config({"data": -1, "tensor": 2}, 8) == {"data": 4, "fsdp": 1, "tensor": 2}
    with pytest.raises(ValueError, match="do not divide"):
        parallel.mesh_shape_from_config({"data": -1, "tensor": 3}, 8)
    with pytest.raises(ValueError, match="only one axis"):
        parallel.mesh_shape_from_config({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="not among"):
        parallel.mesh_shape_from_config({"model": 8}, 8)


def test_logical_rules_use_each_mesh_axis_once():
    assert parallel.logical_to_spec(("batch", "length")) == PartitionSpec(("data", "fsdp"), None)
    assert parallel.logical_to_spec(("embed", "mlp")) == PartitionSpec("fsdp", "tensor")
    assert parallel.logical_to_spec(("batch", "embed")) == PartitionSpec(("data", "fsdp"), None)
    with pytest.raises(KeyError):
        parallel.logical_to_spec(("nonsense",))


def test_sharded_sum_equals_numpy():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    x = np.arange(64, dtype=np.float32).reshape(8, 8)
    arr = jax.device_put(x, parallel.named_sharding(mesh, ("batch", "mlp")))
    assert len(arr.sharding.device_set) == 8
    np.testing.assert_allclose(jax.jit(jnp.sum)(arr), x.sum())


def test_a_gpu_or_oversized_mesh_on_cpu_names_the_fix():
    from configs import movielens

    gpu8 = dict(movielens.get_config("paper-gpu8").mesh)
    assert gpu8["platform"] == "gpu"
    with pytest.raises(RuntimeError, match=r"asks for a GPU mesh \(config.mesh.platform='gpu'\).*"
                                           r"pip install -e '\.\[cuda12\]'"):
        parallel.make_mesh(gpu8)
    with pytest.raises(RuntimeError, match=r"asks for a TPU mesh.*pip install -e '\.\[tpu\]'"):
        parallel.make_mesh(dict(movielens.get_config("paper-tpu").mesh))
    with pytest.raises(RuntimeError, match=r"needs 16 devices but jax sees 8 CPU device\(s\).*cuda12"):
        parallel.make_mesh({"data": 2, "fsdp": 8, "tensor": 1})
    with pytest.raises(ValueError, match="config.mesh.platform='cuda' must be"):
        parallel.make_mesh({"platform": "cuda"})
    # The same mesh on the platform it names, or told to use the CPU, is built.
    mesh = parallel.make_mesh({**gpu8, "platform": "cpu"})
    assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}


def test_distributed_flags_to_initialize_arguments():
    args = parallel.distributed_arguments
    assert args() is None and args("", None, 1, None) is None  # one process: nothing to join
    assert args("", "10.0.0.1:1234", 4, 2) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                               "process_id": 2}
    assert args("auto") == {"coordinator_address": None, "num_processes": None, "process_id": None}
    assert args("auto", "", 8, None) == {"coordinator_address": None, "num_processes": 8, "process_id": None}
    with pytest.raises(ValueError, match="--num_processes=2 needs --coordinator and --process_id"):
        args("", None, 2, None)
    with pytest.raises(ValueError, match=r"--process_id=3 must be in \[0, 2\)"):
        args("", "h:1", 2, 3)
    with pytest.raises(ValueError, match="without --num_processes > 1"):
        args("", "h:1", None, None)
    with pytest.raises(ValueError, match="--distributed='yes'"):
        args("yes")


def test_one_process_writes_and_passes_barriers(tmp_path):
    assert parallel.is_writer()
    parallel.barrier("nothing to wait for")
    with parallel.writer_first("a block"):
        (tmp_path / "x").write_text("1")
    assert (tmp_path / "x").read_text() == "1"
