import io

import numpy as np
import pytest
from PIL import Image

from portrait.errors import InvalidImageError
from portrait.images import ImageLimits, load_image


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_rgb_from_path_bytes_file_and_array(tmp_path):
    image = Image.new("RGB", (7, 5), (10, 20, 30))
    path = tmp_path / "a.png"
    image.save(path)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes()), np.asarray(image), image):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and loaded.size == (7, 5)
        assert loaded.getpixel((3, 2)) == (10, 20, 30)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    loaded = load_image(encode(image, "JPEG", exif=exif, quality=95))
    assert loaded.size == (20, 40)
    red, green, blue = loaded.getpixel((10, 3))  # the left stripe is now at the top
    assert blue > 200 and red < 60


def test_cmyk_becomes_rgb():
    loaded = load_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert loaded.mode == "RGB"
    red, green, blue = loaded.getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_grayscale_is_scaled_not_clipped():
    array = np.array([[0, 32896, 65535]], dtype=np.uint16)
    loaded = load_image(encode(Image.fromarray(array)))
    assert [loaded.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_float_and_16_bit_arrays():
    assert load_image(np.full((2, 2, 3), 0.5, dtype=np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.full((2, 2), 65535, dtype=np.uint16)).getpixel((1, 1)) == (255, 255, 255)


def test_transparency_goes_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(encode(rgba)).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert load_image(encode(palette, transparency=0)).getpixel((1, 1)) == (255, 255, 255)


def test_grayscale_and_bilevel():
    assert load_image(encode(Image.new("L", (3, 3), 77))).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(encode(Image.new("1", (3, 3), 1))).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    red, green, _ = load_image(data).getpixel((3, 3))
    assert red > 200 and green < 60


@pytest.mark.parametrize("payload", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_input_raises_invalid_image(payload):
    with pytest.raises(InvalidImageError):
        load_image(payload)


def test_truncated_file_raises_invalid_image():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(InvalidImageError, match="decode"):
        load_image(data[: len(data) // 2])


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InvalidImageError, match="No such image file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InvalidImageError, match="folder"):
        load_image(tmp_path)


def test_huge_image_is_refused_before_decoding():
    data = encode(Image.new("1", (12000, 12000)))
    with pytest.raises(InvalidImageError, match="12000×12000"):
        load_image(data)
    with pytest.raises(InvalidImageError, match="limit is"):
        load_image(Image.new("RGB", (20, 20)), ImageLimits(max_pixels=100))
