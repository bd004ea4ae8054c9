"""setuptools entry point; the project metadata lives in pyproject.toml."""

from setuptools import setup

setup()
