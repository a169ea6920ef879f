"""rallrec-jax: RALLRec+ (arXiv 2503.20430) in JAX/Flax."""
from setuptools import find_packages, setup

# Ranges admit the versions checked in shared/docs/environment.md (Python 3.11, jax 0.10.2) and the
# newer ones that Python 3.12 gets; jraph has only dev releases, so it is pinned exactly.
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "jraph==0.0.6.dev0",
    "numpy>=2.0",
    "transformers>=5.0,<6",
    "tensorflow-datasets>=4.9.10",
    "array-record>=0.8",
    "importlib-resources>=6",  # tfds.data_source imports it lazily
    "ml-collections>=1.1.0",
    "absl-py>=2.5.1",
    "safetensors>=0.8.0",
    # Reads GGUF weights (the offline SmolLM2 asset) with numpy; no torch needed.
    "gguf>=0.17",
    "tqdm>=4.66",
    # The paper's figures (reasoning analyses), written as PNG with the Agg backend.
    "matplotlib>=3.8",
    # TensorBoard event files of the LoRA tuning, without TensorFlow.
    "tensorboardX>=2.6",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8",
        # The PyTorch reference in parity tests; 2.13.0 is the CPU wheel on the project's machines.
        "torch==2.13.0",
        "scikit-learn>=1.5",
        # transformers needs it to load a GGUF file as the PyTorch reference of the parity tests.
        "accelerate>=1.0",
        # The Colab notebook is executed headless by the tests.
        "nbformat>=5.9",
        "nbclient>=0.10",
        "ipykernel>=6.29",
    ],
    # The PyTorch peers of benchmarks/ (transformers + peft for the LoRA step).
    "bench": ["torch==2.13.0", "peft>=0.13"],
}

setup(
    name="rallrec-jax",
    version="0.1.0",
    description="RALLRec+: retrieval-augmented LLM recommendation with reasoning, in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["rallrec_jax", "rallrec_jax.*"]),
    # The native LightGCN kernel is compiled from source at first use (rallrec_jax/retrieval/native.py).
    package_data={"rallrec_jax.retrieval": ["csrc/*.cc"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="MIT",
)
