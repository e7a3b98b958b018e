"""Every shipped recipe takes one real training step on small files in its dataset's real format."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.data.mnist import system_copy
from alexnet.inference import preprocess_from_card
from alexnet.modelcard import ModelCard
from alexnet.modeldir import ensemble_members
from alexnet.training.config import read_recipe, recipe_names, resolve_config

from fileformats import write_cifar10, write_learnable_mnist

pytestmark = pytest.mark.slow


class _OneStep:
    """Stops training after its first optimiser step (then validation and the test still run)."""

    def __new__(cls):
        import lightning.pytorch as pl

        class OneStep(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                trainer.should_stop = True

        return OneStep()


def _imagenet_cache(name: str, root, monkeypatch) -> None:
    """Random weights in torchvision's layout, in a hub cache under a name carrying their real hash."""
    import hashlib

    import torch

    from alexnet.models import get_model, model_spec

    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    cache = root / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    with torch.device("meta"):
        shapes = get_model(name).state_dict()
    state = {k: torch.randn(v.shape) * 0.01 if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
             for k, v in shapes.items()}  # fmt: skip
    torch.save(state, cache / "weights.pth")
    digest = hashlib.sha256((cache / "weights.pth").read_bytes()).hexdigest()[:8]
    (cache / "weights.pth").rename(cache / f"{name}-{digest}.pth")
    weights = model_spec(name).weights
    url = f"https://download.pytorch.org/models/{name}-{digest}.pth"
    monkeypatch.setitem(weights, "imagenet", dataclasses.replace(weights["imagenet"], url=url))


def _data_for(name: str, root):
    data = read_recipe(name)[0]["data"]
    if data == "cifar10":
        write_cifar10(root / "cifar-10-batches-py", rows_per_batch=4)
        return {}
    if data in ("mnist", "fashion-mnist"):
        write_learnable_mnist(root / data, train=40, test=10)
        return {}
    rng = np.random.default_rng(0)
    if "dogs-vs-cats" in data:  # Kaggle's flat layout: the class is the start of the file name
        folder = root / "dogs-vs-cats" / "train"
        folder.mkdir(parents=True)
        for c in ("cat", "dog"):
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(folder / f"{c}.{i}.jpg")
        return {"data": f"folder:{folder}"}
    folder = root / "flowers"
    for c in ("daisy", "dandelion", "rose", "sunflower", "tulip"):
        (folder / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / c / f"{i}.jpg")
    return {"data": f"folder:{folder}"}


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_takes_a_training_step(tmp_path, name, monkeypatch):
    from alexnet.training.run import train

    settings = read_recipe(name)[0]
    if settings.get("pretrained") == "imagenet":
        _imagenet_cache(settings["model"], tmp_path, monkeypatch)
    overrides = {"root": str(tmp_path), "batch_size": 4, "epochs": 1, "val_fraction": 0.25, **_data_for(name, tmp_path)}
    config = resolve_config(recipe=name).replace(**overrides)
    report = train(config, out=tmp_path / "run", callbacks=[_OneStep()])
    assert report["epochs"] == 1 and report["test_images"] > 0
    model = _model_dir(tmp_path / "run", config.members)
    assert (model / "model.safetensors").exists()
    card = ModelCard.read(model)  # its test views do only what its training did
    inputs = card.preprocess
    note = preprocess_from_card(card).unseen_views(config.tta, inputs.storage_size, inputs.augmented)
    assert note is None, note


def _model_dir(run: Path, members: int) -> Path:
    """The run's model directory: the run itself, or an ensemble's first member (``members`` of them)."""
    if members == 1:
        return run
    found = ensemble_members(run)
    assert len(found) == members, found
    return found[0]


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(
    not (SHARED / "cifar10-train-subset").exists(), reason="no shared CIFAR-10 subset beside the checkout"
)
def test_cifar10_recipe_learns_in_one_short_epoch_on_real_images(tmp_path):
    from alexnet.training.run import train

    root = str(SHARED / "cifar10-train-subset")  # no test_batch: hold out a validation split to measure
    config = resolve_config(recipe="cifar10", overrides={"root": root, "epochs": 1, "val_fraction": 0.1})
    report = train(config, out=tmp_path / "run")
    # 4 steps of 1,024 real images: far from trained, well above the 10% of chance.
    assert report["epochs"] == 1 and report["best_val_acc"] > 0.2, report["best_val_acc"]
    assert report["config"]["whiten"] and report["global_batch_size"] == 1024


# The real files under ../shared/data each recipe's dataset can be read from (a recipe whose data is not
# there is skipped): a small stratified fraction, so that every reference recipe takes real steps quickly.
FLOWERS = SHARED / "flowers5-128"
REAL_DATA = {
    "cifar10": {"root": str(SHARED / "cifar10-train-subset")},
    "mnist": {"root": str(SHARED / "mnist-train-subset")},
    "fashion-mnist": {},  # Debian's dataset-fashion-mnist, found without a root
    "folder:flowers": {"data": f"folder:{FLOWERS}", "train_fraction": 0.15},
    "folder:dogs-vs-cats/train": {"data": f"folder:{FLOWERS}", "train_fraction": 0.15},  # photos in class folders
}
# The folder recipes read links to the first photos of each flowers class instead (200 photos: 40 test, 10
# validation, 20 trained on): a fifth of a folder is its test split, and VGG19 at 224 px in fp32 spends over
# 10 minutes on the 734 test photos of the whole folder.
PHOTOS_PER_CLASS = 40


def _real_data_there(settings: dict) -> bool:
    place = REAL_DATA[settings["data"]]  # a recipe on data not in the table fails here, not skips
    path = place.get("root") or place.get("data", "").removeprefix("folder:")
    return Path(path).exists() if path else system_copy(settings["data"]) is not None


@pytest.fixture(scope="module")
def real_data_root(tmp_path_factory):
    """One data root for every recipe: the folder recipes decode the flowers photos into its cache once."""
    return tmp_path_factory.mktemp("real-data")


def _few_photos(root: Path) -> Path:
    """A class folder of links to the first ``PHOTOS_PER_CLASS`` real photos of each flowers class."""
    folder = root / "flowers-few"
    if not folder.exists():
        for source in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
            (folder / source.name).mkdir(parents=True)
            for photo in sorted(source.iterdir())[:PHOTOS_PER_CLASS]:
                (folder / source.name / photo.name).symlink_to(photo)
    return folder


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_takes_real_steps_on_real_images(tmp_path, real_data_root, name, monkeypatch):
    from alexnet.training.run import train

    settings = read_recipe(name)[0]
    if not _real_data_there(settings):
        pytest.skip(f"no real {settings['data']} data beside the checkout")
    if settings.get("pretrained") == "imagenet":
        _imagenet_cache(settings["model"], tmp_path, monkeypatch)
    overrides = {"root": str(real_data_root), "epochs": 1, "batch_size": 16, "train_fraction": 0.01,
                 "val_fraction": 0.05, **REAL_DATA[settings["data"]]}  # fmt: skip
    if settings["data"].startswith("folder:"):
        overrides["data"] = f"folder:{_few_photos(real_data_root)}"
    config = resolve_config(recipe=name).replace(**overrides)
    report = train(config, out=tmp_path / "run", callbacks=[_OneStep()])
    model = _model_dir(tmp_path / "run", config.members)
    rows = (model / "metrics.csv").read_text().splitlines()
    assert report["epochs"] == 1 and len(rows) == 2 and "nan" not in rows[1], rows
    assert report["best_val_acc"] is not None and (model / "model.safetensors").exists()
