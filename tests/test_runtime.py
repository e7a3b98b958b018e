import subprocess
import sys
from pathlib import Path

from alexnet import runtime


def test_tune_allocator_takes_on_glibc():
    # In a fresh process: the setting is process-wide and must not leak into the test run.
    code = "from alexnet.runtime import tune_allocator; print(tune_allocator())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert done.stdout.strip() == expected


def test_cpu_features_are_the_flags_of_proc_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    words = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    flags = {word for word in words if word.startswith("avx")}
    assert flags <= runtime.cpu_flags() <= words
    assert runtime.cpu_has_amx() == ("amx_bf16" in words)
    assert runtime.cpu_supports_bf16() == bool(words & {"avx512_bf16", "amx_bf16"})
