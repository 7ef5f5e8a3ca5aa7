from setuptools import find_packages, setup

setup(
    name="nni_darts_ext",
    version="0.1.0",
    description="Second-order DARTS, P-DARTS and PC-DARTS as NNI 3.0 strategies",
    packages=find_packages(include=["nni_darts_ext", "nni_darts_ext.*"]),
    python_requires=">=3.9",
    install_requires=[
        # nni 3.0 is the last NNI release; its one-shot code targets pytorch-lightning 2.x (imported as pytorch_lightning).
        "nni==3.0",
        # torch/torchvision: the CUDA builds that lie on this machine's disk (the CPU-only 2.13.0 has no working torchvision).
        "torch==2.14.1",
        "torchvision==0.29.1",
        "pytorch-lightning>=2.0,<3",
        "tensorboard",
        "scikit-learn",
        "matplotlib",
        "graphviz",
        # nnictl imports pkg_resources, which setuptools 81 removes.
        "setuptools<81",
    ],
    extras_require={"test": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": ["nni-darts-ext=nni_darts_ext.cli:main"]},
)
