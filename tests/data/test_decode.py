import numpy as np
from PIL import Image

from alexnet.data.decode import decode_image


def test_short_side_resized_then_centre_cropped(tmp_path):
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 20:60] = 255  # a white band over the middle half of the width
    Image.fromarray(image).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 20)
    assert out.shape == (3, 20, 20) and out.dtype == np.uint8
    # The centre 40x40 of 40x80 is the band; only the outermost columns blend with the black beside it.
    assert out[:, :, 1:-1].min() >= 250 and out[:, :, [0, -1]].min() > 200


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "red.jpg")  # pure red in CMYK
    out = decode_image(tmp_path / "red.jpg", 8)
    assert out[0].mean() > 200 and out[1].mean() < 60 and out[2].mean() < 60


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    grey = np.full((8, 8), 32768, dtype=np.uint16)  # half of full scale
    Image.fromarray(grey).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = decode_image(tmp_path / "deep.png", 8)
    assert (abs(out.astype(int) - 128) <= 1).all()


def test_transparent_pixels_land_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    assert (decode_image(tmp_path / "cut.png", 8) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90-degree clockwise turn
    Image.fromarray(image).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "turned.jpg", 10)  # after the turn: 20 tall, 10 wide, white on top
    top, bottom = out[:, :3].mean(), out[:, -3:].mean()
    assert top > 200 and bottom < 50


def test_greyscale_bmp_and_webp(tmp_path):
    Image.new("L", (12, 12), 90).save(tmp_path / "g.bmp")
    Image.new("RGB", (12, 12), (10, 200, 30)).save(tmp_path / "c.webp", lossless=True)
    assert (decode_image(tmp_path / "g.bmp", 6) == 90).all()
    assert decode_image(tmp_path / "c.webp", 6)[:, 2, 2].tolist() == [10, 200, 30]
