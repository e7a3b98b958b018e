from dataclasses import replace

import pytest
import torch
from torch import nn

from alexnet.data.augment import Preprocess
from alexnet.errors import InputError
from alexnet.inference import average_views, load_classifier, resolve_dtype

from modeldirs import constant_model, expected_probabilities, write_model_dir


class MeanLogits(nn.Module):
    """Logits (mean, -mean) of each image, and a count of forward calls and images seen."""

    def __init__(self):
        super().__init__()
        self.calls, self.images = 0, 0

    def forward(self, x):
        self.calls += 1
        self.images += len(x)
        m = x.float().mean((1, 2, 3))
        return torch.stack([m, -m], 1)


def test_views_of_small_batches_are_softmax_averaged_in_one_forward_pass():
    model = MeanLogits()
    views = torch.stack([torch.full((3, 1, 2, 2), v) for v in (0.0, 1.0, 2.0)])  # (V=3, N=3, ...)
    out = average_views(model, views)
    expected = torch.stack([torch.tensor([v, -v]).softmax(0) for v in (0.0, 1.0, 2.0)]).mean(0)
    torch.testing.assert_close(out, expected.expand(3, 2))
    assert (model.calls, model.images) == (1, 9)


def test_views_of_large_batches_run_a_view_or_more_a_pass():
    """Up to ``PASS_IMAGES`` images a pass, whole views: 3 views of 200 images in three passes, 4 views of 100 in
    two; the same probabilities as one pass."""
    for views_count, n, passes in [(3, 200, 3), (4, 100, 2)]:
        model = MeanLogits()
        values = torch.arange(views_count * n, dtype=torch.float32).reshape(views_count, n) / (views_count * n)
        views = values[:, :, None, None, None].expand(views_count, n, 1, 2, 2)
        out = average_views(model, views)
        expected = torch.stack([values, -values], -1).softmax(-1).mean(0)
        torch.testing.assert_close(out, expected)
        assert (model.calls, model.images) == (passes, views_count * n)


def test_ten_crop_runs_ten_views_per_image_in_a_single_call(tmp_path):
    classifier = load_classifier(write_model_dir(tmp_path / "m"), precision="fp32")
    counter = MeanLogits()

    def count(module, args):
        counter(args[0])

    hook = classifier.model.register_forward_pre_hook(count)
    out = classifier.probabilities(torch.zeros(6, 1, 28, 28, dtype=torch.uint8), "ten-crop")
    hook.remove()
    assert (counter.calls, counter.images) == (1, 60)
    torch.testing.assert_close(out, expected_probabilities().expand(6, 10))


def test_test_views_are_made_model_inputs_a_pass_at_a_time(tmp_path, monkeypatch):
    """``probabilities`` crops the stored uint8 pixels and normalises a pass of views at a time: the same
    probabilities, to the bit, as all views normalised first (``Preprocess.evaluate``)."""
    classifier = replace(load_classifier(write_model_dir(tmp_path / "m"), precision="fp32"), model=MeanLogits())
    images = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    crops = classifier.preprocess.test_crops(images, "ten-crop")
    assert crops.dtype == torch.uint8 and crops.shape == (10, 60, 1, 28, 28)
    whole = average_views(classifier.model, classifier.preprocess.evaluate(images, "ten-crop"))
    assert len(set(whole[:, 0].tolist())) > 1  # the images' probabilities differ: the check below can fail
    finish, passes = Preprocess.finish_views, []

    def counted(self, views, dtype=torch.float32):
        passes.append(len(views))
        return finish(self, views, dtype)

    monkeypatch.setattr(Preprocess, "finish_views", counted)
    assert torch.equal(classifier.probabilities(images, "ten-crop"), whole)
    assert passes == [4, 4, 2]  # 256 // 60 = 4 views a pass


def test_checkpoint_inside_a_run_loads_its_model_weights(tmp_path):
    run = write_model_dir(tmp_path / "run")
    (run / "checkpoints").mkdir()
    state = {f"model.{k}": v for k, v in constant_model().state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, run / "checkpoints" / "best.ckpt")
    classifier = load_classifier(run / "checkpoints" / "best.ckpt", precision="fp32")
    assert classifier.folder == run and classifier.weights.name == "best.ckpt"
    out = classifier.probabilities(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    torch.testing.assert_close(out, expected_probabilities().expand(2, 10))


def test_ema_weights_win_over_the_raw_ones(tmp_path):
    run = write_model_dir(tmp_path / "run")
    good = constant_model().state_dict()
    raw = {f"model.{k}": torch.zeros_like(v) for k, v in good.items()}
    ema = {f"ema.module.{k}": v for k, v in good.items()}
    torch.save({"state_dict": {**raw, **ema, "ema.n_averaged": torch.tensor(5)}}, run / "last.ckpt")
    classifier = load_classifier(run / "last.ckpt", precision="fp32")
    torch.testing.assert_close(classifier.model.classifier[-1].bias, good["classifier.3.bias"])


class Evil:
    """Any class: unpickling it would run arbitrary code, so weights_only loading refuses it."""


def test_pickled_objects_in_a_checkpoint_are_refused(tmp_path):
    run = write_model_dir(tmp_path / "run")
    torch.save({"state_dict": {}, "payload": Evil()}, run / "evil.ckpt")
    with pytest.raises(InputError, match="evil.ckpt: not a readable checkpoint"):
        load_classifier(run / "evil.ckpt")


def _file(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such file or directory"),
        (lambda d: _file(d / "x.txt"), "not a run directory, model directory"),
        (lambda d: _file(d / "c" / "a.ckpt"), "no model.json in its run directory"),
        (lambda d: d, "no model.json"),
        (lambda d: _file(write_model_dir(d / "m") / "broken.ckpt", b"garbage"), "broken.ckpt: not a readable"),
    ],
)
def test_bad_sources_are_one_line_input_errors(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as caught:
        load_classifier(make(tmp_path))
    assert "\n" not in str(caught.value)


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(InputError, match="unknown precision 'half'"):
        resolve_dtype("half", cpu)


def test_an_unfinished_run_points_at_its_checkpoint(tmp_path):
    run = write_model_dir(tmp_path / "run")
    (run / "model.safetensors").unlink()
    (run / "checkpoints").mkdir()
    state = {f"model.{k}": v for k, v in constant_model().state_dict().items()}
    torch.save({"state_dict": state}, run / "checkpoints" / "last.ckpt")
    with pytest.raises(InputError, match=r"no model.safetensors yet \(the run has not finished\); use .*last.ckpt"):
        load_classifier(run)
    assert load_classifier(run / "checkpoints" / "last.ckpt").weights.name == "last.ckpt"
