"""The package's one compiled part (the rest is in pyproject.toml): ``lrn.c``, local response normalisation's
kernels, loaded with ctypes by ``alexnet.models.native``. Optional: without a C compiler the install goes on and
the layer runs on torch's operators."""

from setuptools import Extension, setup

# -funsafe-math-optimizations with -ffinite-math-only lets gcc take 1 / sqrt from the reciprocal-root instruction
# and a Newton step (the kernels see finite maps): 12% off the kernels' time on an AMX Xeon, measured.
# -fno-wrapv undoes Python's -fwrapv, under which gcc left the blocks' loops unvectorised (4x slower, measured).
FLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-funsafe-math-optimizations", "-ffinite-math-only", "-fno-wrapv"]

setup(
    ext_modules=[
        Extension("alexnet.models._lrn", ["src/alexnet/models/lrn.c"], extra_compile_args=FLAGS, optional=True)
    ]
)
