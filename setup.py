"""Builds the one compiled module, ``stream._cells`` (Cython; everything else is in pyproject.toml)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize([Extension("stream._cells", ["stream/_cells.pyx"])], language_level=3))
