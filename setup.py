"""The one build step pyproject.toml cannot state for every setuptools this project accepts: the optional C fast
path of ``run.log`` (``producers/_hotpath.c``).  Without a C compiler it is skipped (``optional=True``) and
``producers.run`` uses its Python fast path: same records, a few hundred nanoseconds more per call."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("producers._hotpath", ["producers/_hotpath.c"], optional=True)])
