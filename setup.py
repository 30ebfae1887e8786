"""esmm_tf: ESMM (Ma et al., SIGIR 2018) for TensorFlow 2 / Keras 3."""

from pathlib import Path

from setuptools import find_packages, setup

BEAM = ["apache-beam==2.77.0"]
# importlib_resources and dill: imported by tensorflow-datasets 4.9.10 (builds,
# tfds.testing) but not declared for Python 3.11; mlcroissant: the `tfds` CLI.
TFDS = [
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",
    "dill==0.4.1",
    "mlcroissant==1.1.1",
]
PLOT = ["matplotlib==3.11.2"]
# `tensorflow` runs on CPU as it is; the [gpu] extra adds the CUDA/cuDNN wheels
# (Linux x86_64) so that the same install uses the host's NVIDIA GPUs.
# tensorflow-serving-api: the PredictionLog protos of the export's warm-up file.
TENSORFLOW = "tensorflow==2.21.0"
SERVING_API = "tensorflow-serving-api==2.21.0"

setup(
    name="esmm_tf",
    version="0.1.0",
    description=(
        "Entire Space Multi-Task Model (ESMM): Ali-CCP data prep, training, exact "
        "evaluation and TensorFlow Serving export"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["esmm_tf*", "data_prep*", "experiments*"]),
    package_data={"data_prep.tfds.ali_ccp": ["README.md", "CITATIONS.bib"]},
    install_requires=[
        TENSORFLOW,
        SERVING_API,
        "keras==3.15.1",
        "numpy==2.4.6",
        "absl-py==2.5.1",
        "tensorboard==2.21.0",
        "google-crc32c==1.9.0",
    ],
    extras_require={
        "beam": BEAM,  # data_prep.beam_convert
        "tfds": TFDS,  # the ali_ccp TensorFlow Datasets builder
        "plot": PLOT,  # experiments.figure2
        "gpu": ["tensorflow[and-cuda]==2.21.0"],  # CUDA and cuDNN from pip (Linux)
        "dev": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            "ruff==0.17.6",
            "scikit-learn==1.9.1",
            *BEAM,
            *TFDS,
            *PLOT,
        ],
    },
)
