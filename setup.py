"""cvrl_jax: contrastive visual representation learning in JAX/Flax."""

import setuptools

# Pinned to the versions the test-suite runs against; jax/flax move quickly.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "clu==0.0.12",
    "ml-collections==1.1.0",
    "tensorflow-cpu==2.21.0",  # tf.data only: the model never runs in TF.
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",
    "numpy>=2.0",
]

# Detection transfer (configs/detection.py) and the PyTorch export: torch's CPU build
# installs from the local wheel folder (find-links); the pins keep pip from choosing
# a newer CUDA build. torchvision's compiled ops may then not load: tools/export.py's
# import_torchvision supplies the one the detector needs (nms).
DETECTION = ["torch==2.13.0", "torchvision==0.28.0", "pycocotools>=2.0.7", "pillow>=10"]

setuptools.setup(
    name="cvrl_jax",
    version="0.1.0",
    description="Contrastive visual representation learning (SimCLR, MoCo, ...) in JAX/Flax.",
    packages=setuptools.find_packages(include=["cvrl_jax", "cvrl_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"detection": DETECTION, "test": DETECTION + [
        "pytest>=8", "pytest-xdist>=3.8",
        "safetensors>=0.4",
        # The Colab notebook, executed on the CPU (tests/test_notebook.py).
        "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "matplotlib>=3.8",
        # The transfer example's image folder of handwritten digits (tools/digits_folder.py).
        "scikit-learn>=1.3",
    ]},
)
