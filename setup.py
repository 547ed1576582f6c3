"""multimodal: a JAX/Flax research codebase for multimodal deep learning."""
import setuptools

# Upper bounds sit at the versions CI has tested: JAX, Flax and Orbax change APIs between
# minor releases, so a new release is admitted only after the suite passes on it.
INSTALL_REQUIRES = [
    "jax>=0.10.0,<0.11",
    "flax>=0.12.0,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.12.0,<0.13",
    "tensorflow-cpu>=2.20,<2.22",
    "tensorflow-datasets>=4.9.9,<4.10",
    "sentencepiece>=0.2.0,<0.3",
    "ml-collections>=1.0,<1.2",
    "clu>=0.0.12,<0.0.13",
    "tensorboard>=2.20,<2.22",
    "numpy>=1.26,<3",
    "pillow>=10,<14",
    "einops>=0.8,<0.9",
    "absl-py>=2.1,<3",
    # TFDS 4.9 imports it for GeneratorBasedBuilders but declares it only for Python < 3.9.
    "importlib-resources>=6,<8",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8,<10",
        "pytest-timeout>=2.3,<3",
        "pytest-xdist>=3.5,<4",  # the suite runs on every core (README: pytest -n)
        "nbclient>=0.10,<0.12",
        "nbformat>=5.10,<6",
        "ipykernel>=6.29,<8",
        "matplotlib>=3.8,<3.12",
        # The coco-caption reference BLEU and CIDEr-D that tests/test_caption_metrics.py
        # compares against (pure Python; its Java tools are not used).
        "pycocoevalcap==1.2",
        # The HF SigLIP and PaliGemma releases that tests/test_hf_*_parity.py compare against.
        # torch is pinned to the CPU build these machines install (an unpinned torch pulls a
        # several-GB CUDA build); torchvision must not be installed.
        "torch==2.13.0",
        "transformers>=5,<6",
        "safetensors",
    ],
}

setuptools.setup(
    name="multimodal",
    version="0.1.0",
    description="Encoders, fusion modules and heads for multimodal learning in JAX/Flax.",
    packages=setuptools.find_packages(include=["multimodal", "multimodal.*"]),
    package_data={"multimodal": ["assets/*"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
