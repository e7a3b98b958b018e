import pytest
import torch
import torch.nn.functional as F

from alexnet.data.augment import (
    IMAGENET_PCA_EIGVAL,
    Preprocess,
    cutout_,
    flip_translate_views,
    mix,
    random_crop,
    random_hflip,
    random_resized_crop,
    ten_crops,
)
from alexnet.tta import TTA_MODES


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=6, c=3, size=8):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=_gen(42))


def test_random_crop_picks_a_window_of_the_padded_image():
    images = _images()
    out = random_crop(images, 8, 2, _gen())
    padded = F.pad(images, (2, 2, 2, 2))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(len(images)):
        windows = [padded[i, :, y : y + 8, x : x + 8] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_random_crop_with_flip_mirrors_about_half_the_windows():
    images = _images(n=64)
    out = random_crop(images, 6, 1, _gen(), flip=True)
    padded = F.pad(images, (1, 1, 1, 1))
    mirrored = 0
    for i in range(len(images)):
        windows = [padded[i, :, y : y + 6, x : x + 6] for y in range(5) for x in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 16 < mirrored < 48


def test_augmentation_is_deterministic_given_the_generator():
    images = _images()
    assert torch.equal(random_crop(images, 6, 1, _gen(1)), random_crop(images, 6, 1, _gen(1)))
    assert not torch.equal(random_crop(images, 6, 1, _gen(1)), random_crop(images, 6, 1, _gen(2)))
    prep = Preprocess(image_size=16, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, padding=2, lighting=0.1)
    assert torch.equal(prep.train(images, _gen(3)), prep.train(images, _gen(3)))


def test_hflip_mirrors_some_and_keeps_others():
    images = _images(n=64)
    out = random_hflip(images, _gen())
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def test_random_resized_crop_with_full_scale_is_the_image():
    images = _images().float()
    out = random_resized_crop(images, 8, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, images)
    small = random_resized_crop(images, 5, _gen(), scale=(0.1, 0.5))
    assert small.shape == (6, 3, 5, 5)
    assert small.min() >= images.min() and small.max() <= images.max()  # bilinear never overshoots


def test_ten_crop_geometry():
    image = torch.arange(36, dtype=torch.uint8).view(1, 1, 6, 6)
    views = ten_crops(image, 4)
    assert views.shape == (10, 1, 1, 4, 4)
    assert torch.equal(views[0, 0, 0], image[0, 0, :4, :4])  # top-left
    assert torch.equal(views[1, 0, 0], image[0, 0, :4, 2:])  # top-right
    assert torch.equal(views[2, 0, 0], image[0, 0, 2:, :4])  # bottom-left
    assert torch.equal(views[3, 0, 0], image[0, 0, 2:, 2:])  # bottom-right
    assert torch.equal(views[4, 0, 0], image[0, 0, 1:5, 1:5])  # centre
    for k in range(5):
        assert torch.equal(views[5 + k], views[k].flip(-1))


def test_ten_crop_of_a_small_image_uses_training_padding():
    prep = Preprocess(image_size=32, channels=3, mean=(0,) * 3, std=(1,) * 3, padding=4)
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    views = prep.evaluate(images, "ten-crop")
    assert views.shape == (10, 2, 3, 32, 32)
    assert views[0, :, :, :4, :4].abs().max() == 0  # top-left crop starts in the zero padding
    assert torch.equal(views[4], torch.ones_like(views[4]))  # the centre crop is the image itself


def test_pca_lighting_shifts_each_image_along_the_components():
    prep = Preprocess(image_size=2, channels=3, mean=(0,) * 3, std=(1,) * 3, flip=False, lighting=0.1,
                      pca_eigval=IMAGENET_PCA_EIGVAL, pca_eigvec=((1, 0, 0), (0, 1, 0), (0, 0, 1)))  # fmt: skip
    images = torch.full((4, 3, 2, 2), 128, dtype=torch.uint8)
    shift = prep.train(images, _gen()) - 128 / 255
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))  # one shift per image and channel
    ratio = shift[:, 1, 0, 0] / shift[:, 0, 0, 0]
    assert not torch.allclose(ratio, ratio[:1].expand_as(ratio))  # random per image
    assert shift.abs().max() < 0.2


def test_train_output_shape_range_and_layout():
    prep = Preprocess(image_size=24, channels=3, mean=(0.5,), std=(0.5,), padding=4)
    out = prep.train(_images(c=1), _gen())
    assert out.shape == (6, 3, 24, 24) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5
    assert torch.equal(out[:, 0], out[:, 2])  # grey repeated into three channels


def test_crop_of_256_to_224_and_bf16():
    prep = Preprocess(image_size=224, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    images = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    assert prep.train(images, _gen(), dtype=torch.bfloat16).shape == (2, 3, 224, 224)
    centre = prep.evaluate(images)
    assert centre.shape == (1, 2, 3, 224, 224)
    expected = (images[:, :, 16:240, 16:240].float() / 255 - 0.485) / 0.229
    torch.testing.assert_close(centre[0, :, 0], expected[:, 0], rtol=1e-5, atol=1e-5)


def test_flip_tta_and_rgb_to_grey():
    prep = Preprocess(image_size=8, channels=1, mean=(0.0,), std=(1.0,))
    views = prep.evaluate(_images(), "flip")
    assert views.shape == (2, 6, 1, 8, 8)
    torch.testing.assert_close(views[1], views[0].flip(-1))
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        prep.evaluate(_images(), "five-crop")


def test_lighting_needs_rgb():
    prep = Preprocess(image_size=8, channels=3, mean=(0.0,), std=(1.0,), lighting=0.1)
    with pytest.raises(ValueError, match="PCA lighting needs RGB"):
        prep.train(_images(c=1), _gen())


def test_reflect_padding_crops_windows_of_the_mirrored_image():
    images = _images(n=32)
    out = random_crop(images, 8, 2, _gen(), padding_mode="reflect")
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    seen = set()
    for i in range(len(images)):
        matches = [
            (y, x) for y in range(5) for x in range(5) if torch.equal(out[i], padded[i, :, y : y + 8, x : x + 8])
        ]
        assert matches
        seen.update(matches)
    assert len(seen) > 10  # the offsets vary over the whole 5 x 5 range


def test_a_given_flip_mask_decides_the_mirrors():
    images = _images(n=8)
    mask = torch.tensor([True, False] * 4)
    out = random_crop(images, 8, 0, _gen(), flip=mask, padding_mode="reflect")
    assert torch.equal(out[mask], images[mask].flip(-1)) and torch.equal(out[~mask], images[~mask])
    preprocess = Preprocess(image_size=8, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, crop="none")
    views = preprocess.train(images, _gen(), mirrored=mask)
    plain = preprocess.evaluate(images)[0]
    assert torch.equal(views[mask], plain[mask].flip(-1)) and torch.equal(views[~mask], plain[~mask])


def test_flip_translate_views_shift_one_pixel_each_way_with_mirrors():
    images = _images(n=2)
    views = flip_translate_views(images)
    padded = F.pad(images.float(), (1, 1, 1, 1), mode="reflect").to(torch.uint8)
    assert views.shape == (6, 2, 3, 8, 8) and views.dtype == torch.uint8
    assert torch.equal(views[0], images)
    assert torch.equal(views[1], padded[..., :8, :8]) and torch.equal(views[2], padded[..., 2:, 2:])
    assert torch.equal(views[3:], views[:3].flip(-1))
    preprocess = Preprocess(image_size=8, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert preprocess.evaluate(images, "flip-translate").shape == (6, 2, 3, 8, 8)


def test_cutout_zeroes_one_square_per_image_clipped_at_the_edges():
    images = torch.ones(200, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = cutout_(images.clone(), 6, _gen())
    assert out.is_contiguous(memory_format=torch.channels_last)
    holes = out[:, 0] == 0
    assert torch.equal(holes[:, None].expand_as(out), out == 0)  # the same square in every channel
    rows, cols = holes.any(2), holes.any(1)
    # Each hole is a rectangle: its pixels are the product of the rows and columns it touches.
    assert torch.equal(holes, rows[:, :, None] & cols[:, None, :])
    heights, widths = rows.sum(1), cols.sum(1)
    assert heights.max() == 6 and widths.max() == 6 and heights.min() >= 3 and widths.min() >= 3
    assert (heights < 6).any()  # some squares hang over an edge
    corners = holes[:, 0, 0] | holes[:, 0, -1] | holes[:, -1, 0] | holes[:, -1, -1]
    assert corners.any() and not corners.all()
    assert torch.equal(cutout_(images.clone(), 6, _gen()), out)  # given the generator, the same squares


def test_cutout_comes_after_normalisation_and_resize():
    prep = Preprocess(image_size=24, channels=3, mean=(0.5,), std=(0.5,), cutout=8)
    out = prep.train(torch.full((50, 3, 12, 12), 255, dtype=torch.uint8), _gen())
    assert out.is_contiguous(memory_format=torch.channels_last)
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert zeros.max() == 64 and zeros.min() >= 16  # 8 x 8 px of the 24-px input, clipped to at least 4 x 4
    torch.testing.assert_close(out[out != 0], torch.ones_like(out[out != 0]))  # elsewhere the normalised white


def _batch(n=8, size=16):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size)
    return images.contiguous(memory_format=torch.channels_last), torch.arange(n) % 4


def test_mix_off_gives_one_hot_targets_and_untouched_images():
    images, labels = _batch()
    out, targets = mix(images.clone(), labels, 4, _gen())
    assert torch.equal(out, images)
    assert torch.equal(targets, F.one_hot(labels, 4).float())


def test_mixup_blends_each_image_with_its_partner_in_the_reversed_batch_as_the_targets_say():
    images, labels = _batch()
    out, targets = mix(images.clone(), labels, 4, _gen(), mixup=0.4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # Image i is lam * i + (1 - lam) * (7 - i): one lam for the batch, read back from image 0.
    lam = 1.0 - out[0, 0, 0, 0].item() / 7
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(out, lam * images + (1 - lam) * images.flip(0))
    one_hot = F.one_hot(labels, 4).float()
    torch.testing.assert_close(targets, lam * one_hot + (1 - lam) * one_hot.flip(0))
    torch.testing.assert_close(targets.sum(1), torch.ones(8))


def test_cutmix_pastes_one_box_of_the_reversed_batch_and_weights_targets_by_its_area():
    images, labels = _batch()
    one_hot = F.one_hot(labels, 4).float()
    areas = set()
    for seed in range(20):
        out, targets = mix(images.clone(), labels, 4, _gen(seed), cutmix=1.0)
        pasted = out != images  # image i's pixels are i, its partner's 7 - i: every pasted pixel differs
        assert torch.equal(pasted, pasted[:1].expand_as(pasted))  # the same box in every image and channel
        box = pasted[0, 0]
        rows, cols = box.any(1), box.any(0)
        assert torch.equal(box, rows[:, None] & cols[None, :])  # a rectangle
        assert torch.equal(out[pasted], images.flip(0)[pasted])
        lam = 1.0 - box.float().mean().item()
        torch.testing.assert_close(targets, lam * one_hot + (1 - lam) * one_hot.flip(0))
        areas.add(box.sum().item())
    assert len(areas) > 10  # the box's size is drawn per batch


def test_mix_with_both_on_picks_one_per_batch_and_repeats_given_the_generator():
    images, labels = _batch()
    kinds = set()
    for seed in range(20):
        out, targets = mix(images.clone(), labels, 4, _gen(seed), mixup=0.4, cutmix=1.0)
        # MixUp changes every pixel by the same blend; CutMix leaves some pixels as they were.
        kinds.add("cutmix" if (out == images).any() else "mixup")
        again, again_targets = mix(images.clone(), labels, 4, _gen(seed), mixup=0.4, cutmix=1.0)
        assert torch.equal(again, out) and torch.equal(again_targets, targets)
    assert kinds == {"mixup", "cutmix"}


def _changes(batches: list[torch.Tensor], plain: torch.Tensor) -> set[str]:
    """What each batch of views does to the centre views ``plain``: mirrors them, or anything else ("shifts")."""
    found = set()
    for views in batches:
        for view, centre in zip(views, plain, strict=True):
            if torch.equal(view, centre.flip(-1)) and not torch.equal(view, centre):
                found.add("mirrors")
            elif not torch.equal(view, centre):
                found.add("shifts")
    return found


@pytest.mark.parametrize(
    ("stored", "options", "expected"),
    [
        (8, {"padding": 0}, {"mirrors"}),
        (8, {"padding": 2, "flip": False}, {"shifts"}),
        (10, {"padding": 0}, {"mirrors", "shifts"}),  # a random 8 of 10
        (8, {"crop": "none", "flip": False}, set()),
        (8, {"crop": "resized", "flip": False}, {"shifts"}),
        (8, {"padding": 0, "flip": False, "trivial_augment": True}, {"shifts"}),
    ],
)
def test_train_changes_say_what_training_views_do(stored, options, expected):
    preprocess = Preprocess(image_size=8, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, **options)
    images = _images(n=16, size=stored)
    drawn = [preprocess.train(images, _gen(seed)) for seed in range(4)]
    assert _changes(drawn, preprocess.evaluate(images)[0]) == expected
    assert set(preprocess.train_changes(stored)) == expected


@pytest.mark.parametrize("stored", [8, 10])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("tta", ["none", "flip", "flip-translate", "ten-crop"])
def test_view_changes_say_what_test_views_do(stored, padding, tta):
    preprocess = Preprocess(image_size=8, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, padding=padding)
    images = _images(n=4, size=stored)
    views = preprocess.evaluate(images, tta)
    centre = views[4] if tta == "ten-crop" else views[0]
    assert _changes(list(views), centre) == set(preprocess.view_changes(tta, stored))


def test_unseen_views_name_what_training_never_did_and_the_views_that_match():
    still = Preprocess(image_size=28, channels=1, mean=(0.5,), std=(0.25,), padding=0)
    note = still.unseen_views("flip-translate", 28, still.train_changes(28))
    assert note is not None and "hold shifts," in note and "'flip' matches" in note
    assert still.unseen_views("flip", 28, still.train_changes(28)) is None
    assert still.unseen_views("ten-crop", 28, still.train_changes(28)) is None  # no room: ten equal crops
    unflipped = Preprocess(image_size=28, channels=1, mean=(0.5,), std=(0.25,), padding=2, flip=False)
    note = unflipped.unseen_views("flip-translate", 28, unflipped.train_changes(28))
    assert note is not None and "hold mirrors," in note and "'none' matches" in note
    moved = Preprocess(image_size=28, channels=1, mean=(0.5,), std=(0.25,), padding=2)
    assert all(moved.unseen_views(tta, 28, moved.train_changes(28)) is None for tta in TTA_MODES)
