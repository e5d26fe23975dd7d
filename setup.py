# cffi cannot be named in setup.cfg (cffi issue #55): setuptools silently ignores
# cffi_modules there and the wheel ships without the compiled extensions.
from setuptools import setup

setup(cffi_modules=["mab/native/_build.py:ffibuilder"])
