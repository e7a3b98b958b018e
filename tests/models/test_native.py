"""The compiled LRN kernels (``lrn.c`` through ``alexnet.models.native``) against torch's own LRN."""

import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnet.models import layers, native
from alexnet.models.layers import LocalResponseNorm


def reference(x: torch.Tensor, upstream: torch.Tensor, size: int, alpha: float, beta: float, groups: int):
    """torch's LRN per tower in float64 (``alpha`` in the paper's convention): output and input gradient."""
    x = x.detach().double().requires_grad_(True)
    towers = x.chunk(groups, dim=1)
    out = torch.cat([F.local_response_norm(t, size, alpha * size, beta, 2.0) for t in towers], dim=1)
    return out.detach(), torch.autograd.grad(out, x, upstream.double())[0]


def maps(*shape, dtype=torch.float32, seed=0):
    """ReLU'd maps with values of the size of conv1's activations, stored channels_last."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=generator) * 30).relu()
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def test_the_kernels_are_built():
    assert native.available(), "the install built no alexnet/models/_lrn (setup.py; a C compiler is needed)"


@pytest.mark.parametrize("size", [3, 4, 5])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_forward_and_backward_are_torchs_in_float32(size, groups, beta):
    """390 pixels of 20 channels: the kernels' blocks of towers end inside a pixel (towers of 10, window 5: 277
    towers a block) and between pixels."""
    x = maps(2, 20, 13, 15)
    upstream = torch.randn(2, 20, 13, 15)
    assert native.lrn_supported(x, size, groups)
    expected, expected_grad = reference(x, upstream, size, 1e-3, beta, groups)
    out = native.lrn_forward(x, size, 1e-3, beta, 2.0, groups)
    grad = native.lrn_backward(x, upstream, size, 1e-3, beta, 2.0, groups)
    assert out.dtype == grad.dtype == torch.float32
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in (out, grad))
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("relu", [False, True])
def test_the_paper_window_on_whole_vectors_is_torchs_in_float32(groups, relu):
    """Towers of 64, 32 and 16 channels with the paper's window and exponent: the AVX-512 kernels where the CPU
    has them (vectors of 16 channels, each window from shifts of three), to float64's 1e-5 at the towers' edges
    and inside them."""
    x = (torch.randn(3, 64, 7, 9) * 30).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(3, 64, 7, 9)
    expected, expected_grad = reference(x.relu() if relu else x, upstream, 5, 1e-3, 0.75, groups)
    out = native.lrn_forward(x, 5, 1e-3, 0.75, 2.0, groups, relu=relu)
    grad = native.lrn_backward(x, upstream, 5, 1e-3, 0.75, 2.0, groups, relu=relu)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), expected_grad * (x > 0) if relu else expected_grad, rtol=1e-5, atol=1e-6)


def test_the_avx512_kernels_are_used_where_the_cpu_has_them():
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    wanted = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"}
    assert native.avx512() == (platform.machine() == "x86_64" and wanted <= set(flags))


def test_bf16_is_as_close_to_torchs_as_the_operators_are():
    """In bf16 the kernels compute in float and round once: no farther from float64 than the op-by-op layer,
    which rounds after every operation (measured: about half as far)."""
    x = maps(4, 96, 9, 9, dtype=torch.bfloat16)
    upstream = torch.randn(4, 96, 9, 9).to(torch.bfloat16)
    expected, expected_grad = reference(x, upstream, 5, 1e-4, 0.75, 2)
    band = LocalResponseNorm(groups=2).band(96, x.device, x.dtype)
    leaf = x.clone().requires_grad_(True)
    operators = layers._LRN.apply(leaf, band, 1e-4, 0.75, 2.0)
    (operators_grad,) = torch.autograd.grad(operators, leaf, upstream)
    out = native.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 2)
    grad = native.lrn_backward(x, upstream, 5, 1e-4, 0.75, 2.0, 2)
    assert out.dtype == grad.dtype == torch.bfloat16

    def error(ours, truth):
        return float((ours.double() - truth).abs().max() / truth.abs().max())

    assert error(out, expected) <= error(operators, expected) and error(out, expected) < 1e-2
    assert error(grad, expected_grad) <= error(operators_grad, expected_grad) and error(grad, expected_grad) < 1e-2


def test_the_result_does_not_depend_on_the_threads():
    """Rows are split between threads, each computed alone: one thread and two give the same bits."""
    x = maps(3, 96, 11, 11, dtype=torch.bfloat16)
    upstream = torch.randn(3, 96, 11, 11).to(torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 2), native.lrn_backward(x, upstream, 5, 1e-4, 0.75, 2.0, 2)
        torch.set_num_threads(2)
        two = native.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 2), native.lrn_backward(x, upstream, 5, 1e-4, 0.75, 2.0, 2)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_the_layer_runs_on_the_kernels_where_they_apply(monkeypatch):
    lrn = LocalResponseNorm(groups=2)
    x = maps(2, 8, 3, 3).requires_grad_(True)
    upstream = torch.randn(2, 8, 3, 3)
    native_out = lrn(x)
    assert native_out.grad_fn.name() == "_NativeLRNBackward"
    (native_grad,) = torch.autograd.grad(native_out, x, upstream)
    with torch.no_grad():
        torch.testing.assert_close(lrn(x), native_out)  # inference too
    # Not on them: NCHW storage, float64, and while torch.compile or an exporter traces.
    assert lrn(x.contiguous()).grad_fn.name() == "_LRNBackward"
    assert lrn(x.double()).grad_fn.name() == "_LRNBackward"
    monkeypatch.setattr(layers, "_tracing", lambda: True)
    assert lrn(x).grad_fn.name() not in ("_NativeLRNBackward", "_LRNBackward")
    # Where the install built no kernels, the operators give the same result.
    monkeypatch.setattr(layers, "_tracing", lambda: False)
    monkeypatch.setattr(native, "available", lambda: False)
    operators_out = lrn(x)
    assert operators_out.grad_fn.name() == "_LRNBackward"
    torch.testing.assert_close(operators_out, native_out)
    torch.testing.assert_close(torch.autograd.grad(operators_out, x, upstream)[0], native_grad)


def test_the_layer_trains_alexnet_paper_on_the_kernels():
    """A training step of the 2012 network (both LRN layers, conv1's and conv2's towers): in float32 the
    kernels give the operators' loss and gradients; in bf16 both are as far from float32's (a step of two
    images from random weights: 12-27% in every gradient, measured)."""
    from alexnet.models import get_model

    torch.manual_seed(0)
    model = get_model("alexnet_paper", num_classes=5, dropout=0.0).to(memory_format=torch.channels_last)
    images = (torch.randn(2, 3, 227, 227) * 2).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 3])

    def step(bf16: bool, kernels: bool):
        model.zero_grad()
        with pytest.MonkeyPatch.context() as patch:
            if not kernels:
                patch.setattr(native, "available", lambda: False)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(images).float(), labels)
            loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in model.parameters()]

    def distance(ours, theirs):
        return [float((a - b).norm() / b.norm()) for a, b in zip(ours, theirs, strict=True)]

    exact = step(bf16=False, kernels=False)
    assert max(distance(step(bf16=False, kernels=True), exact)) < 1e-4
    kernels, operators = distance(step(True, True), exact), distance(step(True, False), exact)
    assert all(k < 2 * o + 1e-3 for k, o in zip(kernels, operators, strict=True)), (kernels, operators)


@pytest.mark.parametrize("size", [4, 5])
@pytest.mark.parametrize("groups", [1, 2])
def test_the_kernels_apply_a_relu_before_the_layer(size, groups):
    """With ``relu`` the kernels take the ReLU's input: LRN of ``x.relu()`` forward, and backward the gradient
    by ``x`` through the ReLU (zero where ``x`` is not positive), to float64's 1e-5."""
    x = (torch.randn(2, 20, 13, 15) * 30).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 20, 13, 15)
    expected, expected_grad = reference(x.relu(), upstream, size, 1e-3, 0.75, groups)
    out = native.lrn_forward(x, size, 1e-3, 0.75, 2.0, groups, relu=True)
    grad = native.lrn_backward(x, upstream, size, 1e-3, 0.75, 2.0, groups, relu=True)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), expected_grad * (x > 0), rtol=1e-5, atol=1e-6)
    assert (grad[x <= 0] == 0).all() and (x < 0).any()


def test_the_fused_relu_gives_the_bits_of_the_two_layers_in_bf16():
    x = (torch.randn(3, 96, 9, 9) * 30).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(3, 96, 9, 9).to(torch.bfloat16)
    after = x.relu()
    assert torch.equal(
        native.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 2, relu=True), native.lrn_forward(after, 5, 1e-4, 0.75, 2.0, 2)
    )
    two_layers = native.lrn_backward(after, upstream, 5, 1e-4, 0.75, 2.0, 2) * (x > 0)
    assert torch.equal(native.lrn_backward(x, upstream, 5, 1e-4, 0.75, 2.0, 2, relu=True), two_layers)


def _lrn_then_pool(x, upstream, groups, relu, kernel, stride):
    """The layer on the kernels, then torch's max-pool: output and gradient by ``x``."""
    leaf = x.clone().requires_grad_(True)
    out = F.max_pool2d(layers._NativeLRN.apply(leaf, 5, 1e-3, 0.75, 2.0, groups, relu), kernel, stride)
    return out.detach(), torch.autograd.grad(out, leaf, upstream)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("channels", "groups", "relu", "kernel", "stride", "side"),
    [
        (96, 2, True, 3, 2, 27),  # conv2's towers of 48 (AVX-512 where the CPU has it), every row in a window
        (20, 2, True, 3, 2, 12),  # towers of 10 (the C loops); the last row and column in no window
        (32, 1, False, 2, 2, 9),  # no ReLU; windows that do not overlap
        (16, 1, True, 3, 1, 8),  # windows that overlap by two
    ],
)
def test_the_layer_and_the_pool_after_it_are_the_two_in_turn_to_the_bit(
    dtype, channels, groups, relu, kernel, stride, side
):
    """One operation for the layer (and the ReLU before it) and the max-pool after it: the pooled map and the
    gradient are those of the layer on the kernels followed by torch's pool, bit for bit, with tied maxima (a
    value repeated over rows and columns) and maxima shared by overlapping windows; 4 images, so two threads
    split the rows."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, channels, side, side, generator=generator) * 30
    x[:, :, 2::4] = x[:, :, 2:3]  # rows repeated: tied maxima
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    out_side = (side - kernel) // stride + 1
    upstream = (torch.randn(4, channels, out_side, out_side, generator=generator) * 1e3).to(dtype)
    expected, expected_grad = _lrn_then_pool(x, upstream, groups, relu, kernel, stride)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pooled, argmax = native.lrn_pool_forward(x, 5, 1e-3, 0.75, 2.0, groups, relu, kernel, stride)
        grad = native.lrn_pool_backward(x, upstream, argmax, 5, 1e-3, 0.75, 2.0, groups, relu, kernel, stride)
    finally:
        torch.set_num_threads(threads)
    assert argmax.dtype == torch.uint8 and int(argmax.max()) < kernel * kernel
    assert torch.equal(pooled, expected)
    assert torch.equal(grad, expected_grad)


def test_the_layer_pools_on_the_kernels_where_they_apply():
    lrn, pool = LocalResponseNorm(groups=2), torch.nn.MaxPool2d(3, 2)
    x = maps(2, 32, 9, 9)
    assert lrn.pools(x, pool)
    assert not lrn.pools(x, torch.nn.MaxPool2d(3, 2, padding=1))
    assert not lrn.pools(x, torch.nn.MaxPool2d(3, 2, ceil_mode=True))
    assert not lrn.pools(x, torch.nn.MaxPool2d((3, 2), 2))
    assert not lrn.pools(x.contiguous(), pool)  # NCHW: not on the kernels at all
    assert not lrn.pools(x[:, :, :2, :2], pool)  # a window larger than the map
    leaf = x.clone().requires_grad_(True)
    assert lrn(leaf, pool=pool).grad_fn.name() == "_NativeLRNPoolBackward"
    torch.testing.assert_close(lrn(x.contiguous(), pool=pool), pool(lrn(x)))  # the operators, then the pool


def test_unsupported_inputs_are_refused():
    x = maps(1, 8, 2, 2)
    assert not native.lrn_supported(x.contiguous(), 5, 1)  # NCHW storage
    assert not native.lrn_supported(x.double(), 5, 1)
    assert not native.lrn_supported(x, 64, 1)  # a window wider than the kernels' buffers
    assert not native.lrn_supported(x, 5, 3)  # towers that do not divide the channels
    assert not native.lrn_supported(x[0], 5, 1)  # not a batch of maps


def _forward_in_child(x: torch.Tensor, queue) -> None:
    torch.set_num_threads(2)
    queue.put(native.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 2).float().numpy().tobytes())  # plain bytes through the pipe


def test_a_forked_process_runs_the_kernels_in_threads_of_its_own():
    """A data-loader or server process forked after the parent used the kernels: the parent's worker threads
    are not in it, so it must not wait on them."""
    import multiprocessing

    x = maps(2, 96, 9, 9, dtype=torch.bfloat16)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = native.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 2)  # the parent's pool now exists
    finally:
        torch.set_num_threads(threads)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forward_in_child, args=(x, queue))
    child.start()
    try:
        assert queue.get(timeout=60) == expected.float().numpy().tobytes()
    finally:
        child.join(timeout=10)
        child.kill()
