import pytest

from alexnet import runtime
from alexnet.training.trainer import lightning_precision as resolve_precision


def test_explicit_precisions():
    assert resolve_precision("fp32", "cpu") == "32-true"
    assert resolve_precision("bf16", "cpu") == "bf16-mixed"


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_is_bf16_only_where_the_cpu_does_bf16_fast(monkeypatch, fast, expected):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: fast)
    assert resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize(
    ("precision", "device", "fast", "says_why"),
    [
        ("auto", "cpu", False, True),
        ("auto", "cpu", True, False),
        ("fp32", "cpu", False, False),
        ("auto", "cuda", False, False),
    ],
)
def test_the_start_line_says_why_auto_trains_in_fp32_on_a_cpu_without_fast_bf16(
    monkeypatch, precision, device, fast, says_why
):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: fast)
    note = runtime.precision_note(precision, device)
    assert ("no AVX512-BF16 or AMX" in note) is says_why
