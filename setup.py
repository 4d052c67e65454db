"""Install with `pip install -e .` (add `[test]` for the test tools)."""

from setuptools import find_packages, setup

setup(
    name="tf_freetickets",
    version="0.2.0",
    description=(
        "Dynamic sparse training and sparse ensembles (FreeTickets, CigL, "
        "Divide-and-Co-training) for Keras 3 / TensorFlow"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_freetickets", "tf_freetickets.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "numpy",
        "absl-py",
        "ml-collections",
        "tensorboard",
        "scikit-learn",
    ],
    extras_require={
        # scipy (also a scikit-learn dependency): Welch's t quantiles of tools/reporting/significance.py
        # numba: the compiled kernels of tf_freetickets.deploy.fused (FusedMLPEnsemble), tested in CI
        "test": [
            "pytest", "pytest-xdist", "ruff", "tensorflow-datasets", "matplotlib", "pillow", "pdoc>=15", "scipy", "numba",
        ],  # fmt: skip
        "serving": ["numba", "scipy"],  # deploy.fused (numba) and deploy.csr (scipy) serving outside TensorFlow
        "docs": ["pdoc>=15"],  # tools/build_api_docs.py
        "plots": ["matplotlib"],
        "datasets": ["tensorflow-datasets"],
        "tfmot": ["tensorflow-model-optimization", "tf-keras"],
    },
    entry_points={
        "console_scripts": [
            "tft-train = tf_freetickets.train:console_main",
            "tft-evaluate = tf_freetickets.evaluate:console_main",
            "tft-export = tf_freetickets.export_main:console_main",
        ]
    },
)
