import subprocess
import sys


def test_tune_allocator_takes_on_glibc():
    # In a fresh process: the setting is process-wide and must not leak into the test run.
    code = "from alexnet.runtime import tune_allocator; print(tune_allocator())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert done.stdout.strip() == expected
