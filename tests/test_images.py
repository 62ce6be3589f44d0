"""Hostile image files: each one gives an RGB image or an UnreadableImage with a clear reason."""

import io

import numpy as np
import pytest
from PIL import Image

from glass.data.images import UnreadableImage, load_rgb_image


def _jpeg_bytes(size=(32, 24), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_plain_jpeg(tmp_path):
    path = tmp_path / "ok.jpg"
    path.write_bytes(_jpeg_bytes())
    image, notes = load_rgb_image(path)
    assert image.mode == "RGB" and image.size == (32, 24) and notes == []


@pytest.mark.parametrize("name,content,reason", [
    ("zero.jpg", b"", "empty file"),
    ("text.jpg", b"this is not an image at all", "not a recognisable image"),
])
def test_unusable_bytes(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=reason) as caught:
        load_rgb_image(path)
    assert name in str(caught.value)


def test_truncated_jpeg_is_reported(tmp_path):
    data = _jpeg_bytes(size=(256, 256))
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match="truncated or corrupt"):
        load_rgb_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UnreadableImage, match="file not found"):
        load_rgb_image(tmp_path / "nope.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(UnreadableImage, match="not a regular file"):
        load_rgb_image(tmp_path / "dir.jpg")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(path, format="JPEG")
    image, _ = load_rgb_image(path)
    assert image.mode == "RGB"
    red, green, blue = np.asarray(image)[10, 10]
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    array = np.full((10, 10), 32768, dtype=np.uint16)
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")
    image, _ = load_rgb_image(path)
    assert image.mode == "RGB"
    assert abs(int(np.asarray(image)[0, 0, 0]) - 128) <= 1  # mid-grey, not saturated white


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[:, :4] = (0, 0, 255, 255)  # left half opaque blue, right half fully transparent
    Image.fromarray(array, "RGBA").save(path)
    image, _ = load_rgb_image(path)
    pixels = np.asarray(image)
    assert tuple(pixels[0, 0]) == (0, 0, 255) and tuple(pixels[0, 7]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (6, 6), 1)
    image.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    loaded, _ = load_rgb_image(path)
    assert loaded.mode == "RGB" and tuple(np.asarray(loaded)[0, 0]) == (10, 200, 10)


def test_one_pixel_image_is_rejected_below_min_side(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(path)
    assert load_rgb_image(path, min_side=1)[0].size == (1, 1)
    with pytest.raises(UnreadableImage, match="1x1 px, smaller than the minimum side of 16"):
        load_rgb_image(path, min_side=16)


def test_mislabelled_png_is_decoded_by_content_with_a_note(tmp_path):
    path = tmp_path / "actually_png.jpg"
    Image.new("RGB", (5, 5), (1, 2, 3)).save(path, format="PNG")
    image, notes = load_rgb_image(path)
    assert tuple(np.asarray(image)[0, 0]) == (1, 2, 3)
    assert notes and "content is PNG" in notes[0]


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    from hostile_corpus import decompression_bomb_png

    path = tmp_path / "bomb.png"
    path.write_bytes(decompression_bomb_png(12000, 12000))
    assert path.stat().st_size < 2000
    from PIL import ImageFile

    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(UnreadableImage, match=r"declares 12000x12000 = 144,000,000 pixels, above "
                                              r"evaluate.max_image_pixels = 50,000,000"):
        load_rgb_image(path, max_pixels=50_000_000, pixel_limit_key="evaluate.max_image_pixels")
    assert decoded == []   # refused before any pixel was decoded
    # PIL's own guard (twice its MAX_IMAGE_PIXELS) is a clean skip too, not a raw error
    path.write_bytes(decompression_bomb_png(20000, 20000))
    with pytest.raises(UnreadableImage, match="too large to decode safely"):
        load_rgb_image(path)


def test_an_oversized_jpeg_is_decoded_reduced_where_allowed(tmp_path):
    path = tmp_path / "large.jpg"
    Image.fromarray(np.full((400, 600, 3), 90, np.uint8)).save(path, quality=90)
    image, notes = load_rgb_image(path, max_pixels=100_000, reduce_large=True)
    assert image.size == (300, 200) and "decoded reduced to 300x200 from 600x400" in notes[0]
    with pytest.raises(UnreadableImage, match="above max_image_pixels = 100,000"):
        load_rgb_image(path, max_pixels=100_000)
    with pytest.raises(UnreadableImage, match="above"):   # a PNG cannot be decoded reduced
        Image.fromarray(np.full((400, 600, 3), 90, np.uint8)).save(tmp_path / "large.png")
        load_rgb_image(tmp_path / "large.png", max_pixels=100_000, reduce_large=True)
    assert load_rgb_image(path, max_pixels=240_000)[0].size == (600, 400)   # within the limit


def test_an_animated_image_uses_its_first_frame_with_a_note(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).convert("P") for k in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    image, notes = load_rgb_image(tmp_path / "a.gif")
    assert image.size == (8, 8) and notes == ["animated (3 frames): the first frame is used"]
