"""The package's one compiled part (the rest is in pyproject.toml): ``lrn.c``, local response normalisation's
kernels, loaded with ctypes by ``alexnet.models.native``. Optional: without a C compiler the install goes on and
the layer runs on torch's operators."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "alexnet.models._lrn",
            ["src/alexnet/models/lrn.c"],
            extra_compile_args=["-O3", "-fno-math-errno", "-std=c11"],
            optional=True,
        )
    ]
)
