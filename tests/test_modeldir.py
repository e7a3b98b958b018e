import json
import subprocess
import sys

import pytest
import torch

from alexnet.errors import InputError
from alexnet.modelcard import FORMAT_VERSION, InputSpec, ModelCard
from alexnet.modeldir import load_model_dir, save_model_dir
from alexnet.models import get_model

META = {
    "model": "alexnet_cifar",
    "model_kwargs": {"num_classes": 3, "in_channels": 1, "widths": [8, 8, 8, 8, 8], "hidden": [16]},
    "classes": ["a", "b", "c"],
    "preprocess": {"image_size": 28, "channels": 1, "mean": [0.5], "std": [0.25]},
}
CARD = ModelCard(
    model=META["model"],
    model_kwargs=META["model_kwargs"],
    classes=tuple(META["classes"]),
    preprocess=InputSpec(image_size=28, channels=1, mean=(0.5,), std=(0.25,), storage_size=28),
)


def test_exported_model_loads_in_a_fresh_process_without_pickle(tmp_path):
    model = get_model(META["model"], **META["model_kwargs"]).eval()
    save_model_dir(model, tmp_path, CARD)
    images = torch.rand(2, 1, 28, 28)
    torch.save(images, tmp_path / "images.pt")
    code = (
        "import sys, torch; from pathlib import Path; from alexnet.modeldir import load_model_dir; "
        f"m, meta = load_model_dir(Path({str(tmp_path)!r})); "
        f"x = torch.load({str(tmp_path / 'images.pt')!r}, weights_only=True); "
        "print(list(meta.classes), m(x).tolist())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    with torch.no_grad():
        expected = model(images).tolist()
    assert done.stdout.strip() == f"['a', 'b', 'c'] {expected}"
    assert json.loads((tmp_path / "model.json").read_text())["format_version"] == FORMAT_VERSION


def test_mismatched_weights_name_the_first_bad_keys(tmp_path):
    save_model_dir(get_model(META["model"], **META["model_kwargs"]), tmp_path, CARD)
    wrong = {**META, "model_kwargs": {**META["model_kwargs"], "num_classes": 5}}
    (tmp_path / "model.json").write_text(json.dumps(wrong))
    with pytest.raises(InputError, match=r"model.safetensors: weights do not fit the model: wrong shape classifier.3"):
        load_model_dir(tmp_path)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(InputError, match="no model.json"):
        load_model_dir(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(META))
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="not a safetensors file"):
        load_model_dir(tmp_path)
