"""Two processes on localhost joined by jax.distributed (gloo CPU collectives) feed one mesh.

Each process contributes its slice of every global batch; a jitted reduction over the global arrays
must equal the single-process answer. This exercises the multi-host path, not only its code.
"""
import textwrap

import numpy as np

from rallrec_jax.data import batching


from tests.multiproc import run_two_processes

WORKER = textwrap.dedent("""
    import jax.numpy as jnp, numpy as np
    from rallrec_jax.data import batching
    mesh = parallel.make_mesh({"data": -1})
    arrays = {"x": np.arange(50, dtype=np.float32), "w": np.linspace(0, 1, 50).astype(np.float32)}
    step = jax.jit(lambda b: jnp.sum(b["x"] * b["w"] * b["mask"]))
    totals = [float(step(b)) for b in batching.batch_iterator(arrays, 16, mesh=mesh, shuffle=True, seed=3)]
    json.dump({"totals": totals, "process": jax.process_index()}, open(out, "w"))
""")


def test_two_processes_feed_one_mesh(tmp_path):
    results = run_two_processes(WORKER, tmp_path, timeout=300)
    # The single-process answer for the same global batches.
    arrays = {"x": np.arange(50, dtype=np.float32), "w": np.linspace(0, 1, 50).astype(np.float32)}
    expected = [float(np.sum(b["x"] * b["w"] * b["mask"]))
                for b in batching.batch_iterator(arrays, 16, shuffle=True, seed=3)]
    for r in results:
        np.testing.assert_allclose(r["totals"], expected, rtol=1e-6)
    np.testing.assert_allclose(sum(expected), np.sum(arrays["x"] * arrays["w"]), rtol=1e-5)
