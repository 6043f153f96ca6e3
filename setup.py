"""Packaging for minicnn.

``pip install -e ".[dev]"`` installs everything the tests need;
``pip install ".[gpu]"`` adds CuPy (CUDA 12) for the GPU backend;
``pip install ".[interop]"`` adds onnx, onnxruntime and safetensors (ONNX export, safetensors weights);
``pip install ".[mpi]"`` adds mpi4py and the MPICH wheel for data-parallel training;
``pip install ".[web]"`` adds Selenium for the browser tests of ``minicnn report`` / ``explore``.
The raw CUDA sources in ``kernels/`` ship as package data
(``minicnn/kernels/*.cu`` inside the wheel) so a non-editable install finds them.
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    ns = {}
    with open(os.path.join(HERE, "minicnn", "_version.py")) as f:
        exec(f.read(), ns)
    return ns["__version__"]


class BuildPyWithKernels(build_py):
    """Copy the top-level ``kernels/*.cu`` into the built package."""

    def run(self):
        super().run()
        src = os.path.join(HERE, "kernels")
        dst = os.path.join(self.build_lib, "minicnn", "kernels")
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(src)) if os.path.isdir(src) else []:
            if name.endswith((".cu", ".cuh")):
                shutil.copy2(os.path.join(src, name), os.path.join(dst, name))


setup(
    name="minicnn",
    version=read_version(),
    description="A from-scratch, readable CNN framework on NumPy (CPU) or CuPy (GPU)",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["minicnn", "minicnn.*"]),
    # the web pages' style and script (minicnn report, minicnn explore): nothing is fetched at run time
    package_data={"minicnn.report": ["assets/*.css"], "minicnn.explore": ["static/*.html", "static/*.js",
                                                                           "static/*.css"]},
    install_requires=[
        "numpy>=1.24",
        "pillow>=9",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "scipy>=1.10",
    ],
    extras_require={
        "dev": ["pytest>=7", "hypothesis>=6.80", "pytest-timeout>=2.1"],
        "gpu": ["cupy-cuda12x>=13"],
        "torch": ["torch"],
        "interop": ["onnx>=1.14", "onnxruntime>=1.16", "safetensors>=0.4"],
        "web": ["selenium>=4.10"],       # the browser tests of minicnn report / explore (with Debian's chromium)
        "mpi": ["mpi4py>=4", "mpich>=4"],      # mpiexec -n K minicnn train: data-parallel (docs/17)
    },
    entry_points={"console_scripts": ["minicnn=minicnn.cli:main"]},
    cmdclass={"build_py": BuildPyWithKernels},
)
