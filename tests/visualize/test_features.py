import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main
from alexnet.errors import InputError
from alexnet.models import get_model
from alexnet.visualize.features import extract

from modeldirs import write_model_dir


def test_penultimate_is_the_input_of_the_output_layer():
    torch.manual_seed(0)
    model = get_model("alexnet_cifar", num_classes=3, hidden=[12], widths=[4, 4, 4, 4, 4]).eval()
    images = torch.rand(5, 3, 32, 32)
    penultimate = extract(model, images, "penultimate")
    assert penultimate.shape == (5, 12)
    head = model.get_submodule(model.head_name)
    torch.testing.assert_close(head(penultimate), model(images))
    assert extract(model, images, "features.0").shape[0] == 5
    with pytest.raises(InputError, match="no layer 'fc7'; layers: penultimate, features"):
        extract(model, images, "fc7")


def test_features_command_writes_rows_in_the_order_of_the_paths(tmp_path, capsys):
    run = write_model_dir(tmp_path / "run")
    (tmp_path / "photos").mkdir()
    for i in (2, 10, 1):
        Image.fromarray(np.full((28, 28), 20 * i, np.uint8)).save(tmp_path / "photos" / f"img{i}.png")
    (tmp_path / "photos" / "bad.png").write_bytes(b"nope")
    out = tmp_path / "f.npy"
    code = main(["features", str(run), str(tmp_path / "photos"), "--layer", "penultimate", "--out", str(out)])
    assert code == 2 and "bad.png" in capsys.readouterr().err  # the unreadable file is named, the rest written
    features = np.load(out)
    names = [line.rsplit("/", 1)[-1] for line in (tmp_path / "f.txt").read_text().splitlines()]
    assert names == ["img1.png", "img2.png", "img10.png"] and features.shape == (3, 8)
    assert features.dtype == np.float32
