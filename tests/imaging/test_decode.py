"""Decoding untrusted bytes: formats, pixel limit from the header, EXIF, alpha, masks."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fillframe.errors import InvalidInput
from fillframe.imaging.decode import _webp_size, decode_image, decode_mask, sniff_format
from tests.utils.images import encode, photo

LIMIT = 40_000_000


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_header_only(width: int, height: int) -> bytes:
    """A 57-byte PNG whose header claims width x height (8-bit RGB) and holds no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real, valid side x side 1-bit PNG of zeros: a few KB that decode to side**2 pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


# --- formats -------------------------------------------------------------------------------------


def test_png_roundtrip_is_exact() -> None:
    rgb = photo("astronaut")
    out = decode_image(encode(rgb, "PNG"), max_pixels=LIMIT)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, rgb)


def test_lossless_webp_roundtrip_is_exact() -> None:
    rgb = photo("chelsea")
    out = decode_image(encode(rgb, "WEBP", lossless=True), max_pixels=LIMIT)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_decodes_close_to_the_original() -> None:
    rgb = photo("coffee")
    out = decode_image(encode(rgb, "JPEG", quality=95), max_pixels=LIMIT)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("ICO", "ICO")],
)
def test_other_formats_are_refused_by_name(fmt: str, name: str) -> None:
    data = encode(photo("astronaut", (64, 64)), fmt)
    assert sniff_format(data) == name
    with pytest.raises(InvalidInput, match=f"is a {name} file; only JPEG, PNG and WebP"):
        decode_image(data, max_pixels=LIMIT)


def test_svg_and_heic_are_named() -> None:
    assert sniff_format(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>') == "SVG"
    assert sniff_format(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "HEIC"
    assert sniff_format(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00") == "AVIF"


@pytest.mark.parametrize("data", [b"", b"hello world", b"<html>not an image</html>"])
def test_unknown_bytes(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"^The image is not a JPEG, PNG or WebP file\.$"):
        decode_image(data, max_pixels=LIMIT)


# --- corrupt and truncated -----------------------------------------------------------------------

CORRUPT = re.escape("could not be decoded: the file is truncated or corrupt.")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files(fmt: str) -> None:
    data = encode(photo("astronaut"), fmt)
    with pytest.raises(InvalidInput, match=f"^The image {CORRUPT}$"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])  # lossy WebP decodes noise without a complaint
def test_corrupt_bodies(fmt: str) -> None:
    data = bytearray(encode(photo("rocket"), fmt))
    rng = np.random.default_rng(7)
    start = 64  # keep the signature so the format is recognised, then scramble
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidInput, match=CORRUPT):
        decode_image(bytes(data), max_pixels=LIMIT)


def test_header_only_png_is_corrupt_when_small() -> None:
    with pytest.raises(InvalidInput, match=CORRUPT):
        decode_image(png_header_only(64, 64), max_pixels=LIMIT)


# --- decompression bombs -------------------------------------------------------------------------


def test_bomb_refused_from_the_header() -> None:
    # No pixel data at all: if the decoder ran, this would be "truncated", not "pixels".
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InvalidInput, match=r"30000x30000 \(900,000,000 pixels\)"):
        decode_image(png_header_only(30000, 30000), max_pixels=LIMIT)
    assert before == Image.MAX_IMAGE_PIXELS


def test_real_compressed_bomb_refused() -> None:
    data = png_bomb(20000)  # 400 million pixels
    assert len(data) < 100_000
    with pytest.raises(InvalidInput, match="20000x20000"):
        decode_image(data, max_pixels=LIMIT)
    with pytest.raises(InvalidInput, match="The mask is 20000x20000"):
        decode_mask(data, max_pixels=LIMIT)


def test_limit_is_the_callers_not_pillows() -> None:
    rgb = photo("astronaut")  # 512x512 = 262,144 pixels
    data = encode(rgb, "PNG")
    with pytest.raises(InvalidInput, match="at most 262,143 pixels"):
        decode_image(data, max_pixels=262_143)
    assert decode_image(data, max_pixels=262_144).shape == (512, 512, 3)


def webp_variants() -> dict[str, bytes]:
    """The three WebP headers: lossy (VP8), lossless (VP8L), extended (VP8X, here for EXIF)."""
    rgb = photo("chelsea")  # 451 wide, 300 high
    exif = Image.Exif()
    exif[0x0112] = 1
    return {
        "VP8 ": encode(rgb, "WEBP"),
        "VP8L": encode(rgb, "WEBP", lossless=True),
        "VP8X": save(Image.fromarray(rgb), "WEBP", exif=exif.tobytes()),
    }


@pytest.mark.parametrize("chunk", ["VP8 ", "VP8L", "VP8X"])
def test_webp_size_read_before_libwebp_allocates(chunk: str) -> None:
    data = webp_variants()[chunk]
    assert data[12:16] == chunk.encode()
    assert _webp_size(data) == (451, 300)
    with pytest.raises(InvalidInput, match="451x300"):
        decode_image(data, max_pixels=1000)
    assert decode_image(data, max_pixels=451 * 300).shape == (300, 451, 3)


# --- orientation, alpha, modes -------------------------------------------------------------------


def with_orientation(rgb: np.ndarray, fmt: str, orientation: int) -> bytes:
    image = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(image, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # the camera was turned: show it rotated clockwise
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
def test_exif_orientation_applied(orientation: int, expected: object) -> None:
    rgb = photo("chelsea")  # 300x451, not square, so a rotation shows in the shape
    out = decode_image(with_orientation(rgb, "PNG", orientation), max_pixels=LIMIT)
    np.testing.assert_array_equal(out, expected(rgb))  # type: ignore[operator]


def test_exif_rotated_jpeg_comes_out_rotated() -> None:
    rgb = photo("chelsea")
    out = decode_image(with_orientation(rgb, "JPEG", 6), max_pixels=LIMIT)
    rotated = np.rot90(rgb, -1)
    assert out.shape == rotated.shape == (451, 300, 3)
    assert np.abs(out.astype(int) - rotated.astype(int)).mean() < 3


def test_rgba_flattened_onto_white() -> None:
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 10)
    rgba[0, :, 3] = 0  # transparent -> white
    rgba[1, :, 3] = 255  # opaque -> the colour
    rgba[2:, :, 3] = 128  # half -> halfway to white
    out = decode_image(encode(rgba, "PNG"), max_pixels=LIMIT)
    assert out.shape == (4, 3, 3)
    assert (out[0] == 255).all()
    assert (out[1] == (200, 40, 10)).all()
    np.testing.assert_allclose(out[2], [[227.5, 147.5, 132.5]] * 3, atol=1.5)


def test_palette_with_transparency_flattened() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)
    image.paste(0, (0, 0, 4, 8))
    out = decode_image(save(image, "PNG", transparency=0), max_pixels=LIMIT)
    assert (out[:, :4] == 255).all()
    assert (out[:, 4:] == (0, 128, 255)).all()


def test_gray_and_gray_alpha_become_rgb() -> None:
    gray = photo("astronaut")[..., 1]
    out = decode_image(encode(gray, "PNG"), max_pixels=LIMIT)
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=-1))
    la = Image.fromarray(gray).convert("LA")
    out = decode_image(save(la, "PNG"), max_pixels=LIMIT)
    np.testing.assert_array_equal(out[..., 0], gray)


def test_16bit_gray_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    out = decode_image(encode(values, "PNG"), max_pixels=LIMIT)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_cmyk_jpeg_becomes_rgb() -> None:
    rgb = photo("coffee")
    data = save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    out = decode_image(data, max_pixels=LIMIT)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 6


def test_what_names_the_input() -> None:
    with pytest.raises(InvalidInput, match=r"^The mask is not a JPEG"):
        decode_image(b"nope", max_pixels=LIMIT, what="mask")


# --- masks -------------------------------------------------------------------------------------


def test_gray_mask_binarised_at_128() -> None:
    gray = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    mask = decode_mask(encode(gray, "PNG"), max_pixels=LIMIT)
    assert mask.dtype == np.uint8 and mask.shape == (1, 4)
    assert mask.tolist() == [[0, 0, 255, 255]]


def test_rgb_mask_uses_luminance() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    mask = decode_mask(encode(rgb, "PNG"), max_pixels=LIMIT)
    # 601 luma: red 76, green 150, blue 29, white 255.
    assert mask.tolist() == [[0, 255, 0, 255]]


def test_lossy_jpeg_mask_binarised() -> None:
    square = np.zeros((64, 64), np.uint8)
    square[16:48, 16:48] = 255
    mask = decode_mask(encode(square, "JPEG", quality=70), max_pixels=LIMIT)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    assert (mask != square).mean() < 0.01


def test_alpha_matte_is_the_mask() -> None:
    # Black strokes on a transparent layer: the colour is flat, the alpha carries the shape.
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[2:4, 1:5, 3] = 255
    mask = decode_mask(encode(rgba, "PNG"), max_pixels=LIMIT)
    assert mask.tolist() == (rgba[..., 3] >= 128).astype(np.uint8).__mul__(255).tolist()


def test_white_strokes_on_transparent_layer() -> None:
    # Hidden colour under the transparent part must not count: composite over black.
    rgba = np.full((6, 6, 4), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[0, :, :3] = 0  # some hidden black too, so the colour is not flat
    rgba[3, :, 3] = 255
    mask = decode_mask(encode(rgba, "PNG"), max_pixels=LIMIT)
    expected = np.zeros((6, 6), np.uint8)
    expected[3] = 255
    np.testing.assert_array_equal(mask, expected)


def test_opaque_rgba_mask_uses_luminance() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, :3] = 255
    mask = decode_mask(encode(rgba, "PNG"), max_pixels=LIMIT)
    assert mask.tolist() == [[255, 0], [0, 0]]


def test_one_bit_and_16_bit_masks() -> None:
    bits = Image.fromarray(np.array([[0, 255, 255, 0]], np.uint8)).convert("1")
    assert decode_mask(save(bits, "PNG"), max_pixels=LIMIT).tolist() == [[0, 255, 255, 0]]
    deep = np.array([[0, 32767, 32896, 65535]], np.uint16)
    assert decode_mask(encode(deep, "PNG"), max_pixels=LIMIT).tolist() == [[0, 0, 255, 255]]


def test_mask_follows_exif_orientation() -> None:
    gray = np.zeros((20, 40), np.uint8)
    gray[:, :10] = 255  # left strip
    mask = decode_mask(with_orientation(gray, "PNG", 6), max_pixels=LIMIT)
    assert mask.shape == (40, 20)
    np.testing.assert_array_equal(mask, np.rot90(gray, -1))  # the strip is now on top
    assert (mask[:10] == 255).all() and (mask[10:] == 0).all()


def test_corrupt_mask_message() -> None:
    data = encode(photo("astronaut")[..., 0], "PNG")
    with pytest.raises(InvalidInput, match=f"^The mask {CORRUPT}$"):
        decode_mask(data[: len(data) // 2], max_pixels=LIMIT)
