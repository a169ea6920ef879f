"""Every test sees 8 fake CPU devices: the flag must be set before jax is first imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real data sets laid beside the checkout (../shared/data); CI copies them too."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests read the real data sets from there")
    return SHARED_DATA


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end or real-data tests (still run in CI)")


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> pathlib.Path:
    """The tiny random Llama of tests/tiny_llm.py (configs/test.py:tiny reads it from $RALLREC_TINY_LLM)."""
    from tests.tiny_llm import make_tiny_llm

    return make_tiny_llm(tmp_path_factory.mktemp("tiny") / "llm")
