"""benchmarks/device_check.py --dry-run: every part of the accelerator check runs through its code on the CPU
with tiny shapes and lands in the one JSON file, so the script cannot rot before a GPU is lent.

The speed figures of a dry run mean nothing (tiny shapes, a CPU); what is held here is that every part
finishes, records what the GPU run will report, and that part 1 reproduces its stored CPU reference."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # an end-to-end run of the script in a subprocess (about a minute)

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARTS = ("correctness", "lora", "decode", "scoring", "lightgcn", "compile")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("device_out")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--dry-run", "--out",
                           str(out)], env=env, capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    path = out / "device_check.json"
    assert path.is_file(), f"no JSON written (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    doc = json.loads(path.read_text())
    doc["_rc"], doc["_stdout"] = proc.returncode, proc.stdout
    return doc


def test_every_part_finishes_and_is_recorded(dry_run):
    parts = dry_run["parts"]
    assert list(parts) == list(PARTS)
    bad = {k: (v.get("status"), v.get("reason"), v.get("traceback")) for k, v in parts.items() if v["status"] != "ok"}
    assert not bad, bad
    assert dry_run["_rc"] == 0
    assert dry_run["meta"]["dry_run"] is True
    assert "| part | status |" in dry_run["_stdout"]  # the closing table


def test_correctness_reproduces_the_stored_cpu_reference(dry_run):
    c = dry_run["parts"]["correctness"]
    hi = c["fp32_highest"]
    # The same float32 program on the same kind of device as the stored reference: equal to rounding.
    assert hi["max_rel_diff"] <= 1e-5 and hi["top1_agree"] == hi["rows"] == 3
    assert hi["lse_max_abs_diff"] <= 1e-4
    bf = c["bf16"]
    assert bf["dtype"] == "bfloat16" and 0 < bf["max_abs_diff"] < 1.0  # bf16 differs, and by a stated amount


def test_lora_decode_scoring_lightgcn_record_their_figures(dry_run):
    p = dry_run["parts"]
    lora = p["lora"]
    assert lora["shape"] == "tiny" and lora["step_s"] > 0 and lora["model_tflops_per_step"] > 0
    assert len(lora["warmup_s"]) == 2 and lora["mfu"] is None  # a CPU has no bf16 peak in the table
    dec = p["decode"]
    assert [e["batch"] for e in dec["sweep"]] == [1, 4]
    for e in dec["sweep"]:
        assert e["roofline_step_s"] > 0 and min(e["long_s"] + e["short_s"]) > 0 and len(e["long_s"]) == 3
        if e["step_s"] is None:  # tiny shapes on a busy CPU: the 7-step difference may sit below timing noise
            assert e["unmeasured"].startswith("32 tokens ran no slower than 25") and e["fraction_of_roofline"] is None
            assert min(e["long_s"]) <= min(e["short_s"])
        else:
            assert e["unmeasured"] is None and e["step_s"] > 0
            assert e["step_s"] == pytest.approx((min(e["long_s"]) - min(e["short_s"])) / 7)
            assert e["fraction_of_roofline"] == pytest.approx(e["roofline_step_s"] / e["step_s"])
    measured = [e["batch"] for e in dec["sweep"] if e["step_s"] is not None]
    assert dec["best_batch"] in (measured or [None]) and dec["bandwidth"]["copy_gbs"] > 0
    sc = p["scoring"]
    assert sc["pairs"] == 2 and len(sc["ratios"]) == 2 and sc["peer_info"]["device"] == "cpu"
    assert sc["ratio_median"] == pytest.approx(sorted(sc["ratios"])[0] / 2 + sorted(sc["ratios"])[1] / 2)
    lg = p["lightgcn"]
    assert lg["propagation"] == "jraph" and lg["pairs"] == 1 and lg["ours_median_s"] > 0
    comp = p["compile"]["compile_s"]
    assert {"correctness", "lora", "decode", "scoring", "lightgcn"} <= set(comp)
