"""tvm-cruise: Apache TVM extended with on-car accelerator targets."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / "tvm_cruise" / "__init__.py").read_text()).group(1)

# Pinned where a release is known to break us (see tvm_cruise/_compat.py).
INSTALL_REQUIRES = [
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",  # 0.1.15.x segfaults writing MetaSchedule databases
    "numpy",
    "onnx",
    "onnxscript",  # torch's default ONNX exporter needs it
    "xgboost",  # MetaSchedule's cost model
    "psutil",  # MetaSchedule needs it; apache-tvm lists it only as an extra
    "cloudpickle",  # likewise
    "tornado",  # TVM's RPC tracker
]
TEST_REQUIRES = [
    "torch==2.13.0",  # an unpinned torch pulls a multi-GB CUDA build
    # The model corpus (tests/model_corpus.py): public architectures nobody here wrote.
    # torchvision 0.28 is the release for torch 2.13; its C++ ops do not load beside the
    # CPU torch, its models do (see model_corpus.import_torchvision).
    "torchvision==0.28.0",
    "timm",
    # Hugging Face models built from a config (random weights, no download): SegFormer,
    # DPT, YOLOS, DETR.
    "transformers==5.24.0",
    "onnxruntime",
    "pytest",
    "pytest-xdist",  # scripts/test.sh runs the suite in one worker per logical CPU
    "hypothesis",
]

setup(
    name="tvm-cruise",
    version=VERSION,
    description="Apache TVM (Relax) with on-car accelerator targets: BYOC, NPU simulator, "
                "tuned host kernels",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Every package under tvm_cruise/ (a new sub-package is installed without edits here).
    packages=find_packages(include=["tvm_cruise", "tvm_cruise.*"]) + ["tvm_cruise.tuning_logs"],
    # The top-level tuning_logs/ folder (the brief's layout) installs as package data.
    package_dir={"tvm_cruise.tuning_logs": "tuning_logs"},
    package_data={
        "tvm_cruise.targets": ["specs/*.json"],
        "tvm_cruise.models": ["data/*.npz"],  # the trained digits model and its data
        "tvm_cruise.tuning_logs": ["*.md", "**/*.json", "**/*.jsonl"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "bench": TEST_REQUIRES},
    entry_points={"console_scripts": ["tvm-cruise=tvm_cruise.cli:main"]},
)
