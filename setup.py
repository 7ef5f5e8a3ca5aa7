# pyproject.toml is the source of truth (metadata, dependencies, package data); this shim only lets
# `python setup.py --version` and older tools that call setup.py work.
from setuptools import setup

setup()
