import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from alexnet.data.augment import Preprocess
from alexnet.data.trivialaugment import LEVELS, OPERATIONS, apply, strength, trivial_augment
from alexnet.modelcard import InputSpec
from alexnet.training.config import TrainConfig
from alexnet.training.run import _preprocess


def _images(n=4, c=3, size=12, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=generator).float()


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).byte().numpy())


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()


def test_strengths_rise_from_nothing_to_torchvisions_wide_ranges():
    level = torch.tensor([0, 15, LEVELS - 1])
    positive, negative = torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(strength("rotate", level, positive), torch.tensor([0.0, 67.5, 135.0]))
    torch.testing.assert_close(strength("translate_x", level, negative), torch.tensor([-0.0, -16.0, -32.0]))
    torch.testing.assert_close(strength("contrast", level, negative)[-1], torch.tensor(-0.99))
    torch.testing.assert_close(strength("posterize", level, negative), torch.tensor([8.0, 5.0, 2.0]))  # unsigned
    torch.testing.assert_close(strength("solarize", level, negative), torch.tensor([255.0, 127.5, 0.0]))


@pytest.mark.parametrize(
    ("name", "argument", "reference"),
    [
        ("brightness", 0.5, lambda im: ImageEnhance.Brightness(im).enhance(1.5)),
        ("brightness", -0.7, lambda im: ImageEnhance.Brightness(im).enhance(0.3)),
        ("color", 0.9, lambda im: ImageEnhance.Color(im).enhance(1.9)),
        ("contrast", -0.5, lambda im: ImageEnhance.Contrast(im).enhance(0.5)),
        ("contrast", 0.8, lambda im: ImageEnhance.Contrast(im).enhance(1.8)),
        ("sharpness", 0.9, lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
        ("sharpness", -0.6, lambda im: ImageEnhance.Sharpness(im).enhance(0.4)),
        ("posterize", 3.0, lambda im: ImageOps.posterize(im, 3)),
        ("solarize", 100.0, lambda im: ImageOps.solarize(im, 100)),
        ("autocontrast", None, ImageOps.autocontrast),
        ("equalize", None, ImageOps.equalize),
    ],
)
def test_colour_operations_match_pil(name, argument, reference):
    images = _images(size=32)  # equalize leaves channels of fewer than 256 pixels alone
    images[1] = images[1] // 4 + 60  # a dull image: autocontrast and equalize have work to do
    images[2, 1] = 77  # one flat channel: left alone by both
    arguments = None if argument is None else torch.full((len(images),), argument)
    ours = apply(name, images, arguments)
    expected = torch.stack([_tensor(reference(_pil(image))) for image in images])
    assert not torch.equal(expected, images)
    # PIL rounds each intermediate (the grey image, its mean, the smoothed image) to whole values.
    torch.testing.assert_close(ours, expected, rtol=0, atol=2.0)


def test_translation_shifts_by_whole_pixels_and_fills_with_zero():
    images = _images(n=2)
    out = apply("translate_x", images, torch.tensor([3.0, -2.0]))
    torch.testing.assert_close(out[0, ..., 3:], images[0, ..., :-3])
    assert out[0, ..., :3].eq(0).all()
    torch.testing.assert_close(out[1, ..., :-2], images[1, ..., 2:])
    down = apply("translate_y", images, torch.tensor([4.0, 0.0]))
    torch.testing.assert_close(down[0, :, 4:], images[0, :, :-4])
    torch.testing.assert_close(down[1], images[1])


def test_rotation_by_a_quarter_turn_is_rot90_and_zero_degrees_is_identity():
    images = _images(n=2)
    out = apply("rotate", images, torch.tensor([90.0, 0.0]))
    assert torch.equal(out[0], torch.rot90(images[0], 1, (1, 2))) or torch.equal(
        out[0], torch.rot90(images[0], -1, (1, 2))
    )
    torch.testing.assert_close(out[1], images[1])


def test_shear_x_shifts_each_row_by_its_own_whole_number_of_pixels():
    images = _images(n=1, size=10)
    out = apply("shear_x", images, torch.tensor([0.4]))
    shifts = []
    for y in range(10):
        row, sheared = images[0, :, y], out[0, :, y]
        matches = [k for k in range(-9, 10) if torch.equal(sheared, torch.roll(row, k, dims=-1) * _window(10, k))]
        assert matches, f"row {y} is not a shifted copy"
        shifts.append(matches[0])
    assert shifts[0] != shifts[-1]  # the top and bottom rows move apart
    assert apply("shear_y", images, torch.tensor([0.0])).equal(images)


def _window(width: int, shift: int) -> torch.Tensor:
    """1 where a row rolled by ``shift`` holds pixels of the row, 0 where it wrapped around."""
    keep = torch.ones(width)
    if shift > 0:
        keep[:shift] = 0
    elif shift < 0:
        keep[shift:] = 0
    return keep


def test_a_batch_is_augmented_repeatably_given_the_generator():
    images = _images(n=700, size=8)
    out = trivial_augment(images, torch.Generator().manual_seed(1))
    again = trivial_augment(images, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.shape == images.shape
    assert not torch.equal(out, trivial_augment(images, torch.Generator().manual_seed(2)))
    assert out.min() >= 0 and out.max() <= 255
    changed = (out != images).flatten(1).any(1).float().mean()
    # 1 in 14 is the identity, and the weakest levels of some operations change nothing either.
    assert 0.75 < changed < 1.0


ARGUMENTS = {"shear_x": 0.5, "shear_y": 0.5, "translate_x": 5, "translate_y": 5, "rotate": 30, "posterize": 4}


@pytest.mark.parametrize("name", [name for name in OPERATIONS if name != "identity"])
def test_grey_images_take_every_operation(name):
    images = _images(n=3, c=1, size=32) // 2 + 40  # not yet spanning 0..255: autocontrast has work to do
    argument = None if name in ("autocontrast", "equalize") else torch.full((3,), float(ARGUMENTS.get(name, 0.5)))
    out = apply(name, images, argument)
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert torch.equal(out, images) if name == "color" else not torch.equal(out, images)  # grey has no colour


def test_the_setting_reaches_the_training_views_only():
    spec_images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    plain = Preprocess(image_size=16, channels=3, mean=(0.5,), std=(0.25,), flip=False)
    augmented = Preprocess(image_size=16, channels=3, mean=(0.5,), std=(0.25,), flip=False, trivial_augment=True)
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(plain.evaluate(spec_images), augmented.evaluate(spec_images))
    assert not torch.equal(plain.train(spec_images, generator()), augmented.train(spec_images, generator()))
    spec = InputSpec(image_size=16, channels=3, mean=(0.5,), std=(0.25,), storage_size=16)
    assert _preprocess(TrainConfig(trivial_augment=True), spec).trivial_augment
    assert not _preprocess(TrainConfig(), spec).trivial_augment
