import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.errors import InputError
from alexnet.modelcard import DataSpec
from alexnet.models import get_model
from alexnet.visualize.figures import gradcam, visualize

from fileformats import write_mnist
from modeldirs import write_model_dir


@pytest.fixture
def run(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", train=60, test=20)
    torch.manual_seed(0)
    model = get_model("alexnet_cifar", num_classes=10, in_channels=1, hidden=[8], widths=[4, 4, 4, 4, 4])
    return write_model_dir(tmp_path / "run", model, data=DataSpec("mnist", str(tmp_path / "data")))


def test_visualize_writes_the_three_figures(run):
    written = visualize(run, images=6, neighbours=3)
    assert sorted(written) == ["gradcam", "kernels", "neighbours"]
    for path in written.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 50


def test_gradcam_highlights_what_the_class_depends_on():
    # Convolutions that pass the image through and a classifier whose class 1 grows with every feature (class 0
    # shrinks): class 1's heat lies where the image is bright, its left half.
    model = get_model("alexnet_cifar", num_classes=2, in_channels=1, hidden=[4], widths=[4, 4, 4, 4, 4]).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                module.weight[:, 0, module.kernel_size[0] // 2, module.kernel_size[1] // 2] = 1.0
            elif isinstance(module, torch.nn.Linear):
                module.weight.fill_(0.1)
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear) and module.bias is not None:
                module.bias.zero_()
        model.get_submodule(model.head_name).weight[0].neg_()
    images = torch.zeros(2, 1, 32, 32)
    images[:, :, :, :16] = 1.0
    heat = gradcam(model, images, torch.tensor([1, 1]))
    assert heat.shape == (2, 32, 32) and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    assert heat[:, :, :12].mean() > 2 * heat[:, :, 20:].mean()


def test_gradcam_after_inference_on_a_network_with_lrn():
    model = get_model("alexnet_paper", num_classes=3, hidden=[8]).eval()
    images = torch.rand(2, 3, 67, 67)
    with torch.inference_mode():
        model(images)  # as visualize predicts first; nothing made here may leak into the backward pass
    assert gradcam(model, images, torch.tensor([0, 1])).shape == (2, 67, 67)


def test_visualize_needs_the_runs_data_and_the_pytorch_weights(tmp_path):
    from alexnet.export import export_onnx

    run = write_model_dir(tmp_path / "run", data=DataSpec("mnist", str(tmp_path / "nowhere")))
    with pytest.raises(InputError, match="nowhere"):
        visualize(run)
    export_onnx(run, check_images=2)
    with pytest.raises(InputError, match="visualize needs the PyTorch weights"):
        visualize(run / "model.onnx")


def test_kernels_of_a_two_tower_network_come_in_two_blocks(tmp_path):
    from alexnet.visualize.figures import plot_kernels

    plot_kernels(get_model("alexnet_paper", num_classes=5), tmp_path / "k.png", "kernels")
    picture = np.asarray(Image.open(tmp_path / "k.png").convert("L"))
    blank_rows = np.flatnonzero((picture > 250).all(1))
    middle = picture.shape[0] // 2
    assert any(abs(r - middle) < picture.shape[0] // 10 for r in blank_rows)  # a gap between the towers
