"""Mask checks and result encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fillframe.errors import InvalidInput
from fillframe.imaging.decode import decode_image
from fillframe.imaging.encode import encode_image
from fillframe.imaging.masks import check_same_size, dilate, mask_bbox
from tests.utils.images import box_mask, photo


def test_size_mismatch_message_is_width_by_height() -> None:
    rgb = np.zeros((512, 512, 3), np.uint8)
    with pytest.raises(InvalidInput) as info:
        check_same_size(rgb, np.zeros((300, 512), np.uint8))
    assert info.value.code == "invalid_input"
    assert info.value.message == ("The mask is 512x300 but the image is 512x512; they must be the same size.")
    check_same_size(rgb, np.zeros((512, 512), np.uint8))


def test_mask_bbox_is_exclusive() -> None:
    mask = np.zeros((40, 60), np.uint8)
    assert mask_bbox(mask) is None
    mask[5:9, 10:31] = 255
    mask[20, 2] = 255
    assert mask_bbox(mask) == (2, 5, 31, 21)
    assert mask_bbox(box_mask(100, 200, fraction=1.0)) == (0, 0, 200, 100)


def test_dilate_grows_by_a_disc() -> None:
    mask = np.zeros((21, 21), np.uint8)
    mask[10, 10] = 255
    grown = dilate(mask, 3)
    assert grown.dtype == np.uint8 and set(np.unique(grown).tolist()) == {0, 255}
    assert mask_bbox(grown) == (7, 7, 14, 14)
    assert grown[7, 10] == 255 and grown[7, 7] == 0  # round, not square
    np.testing.assert_array_equal(dilate(mask, 0), mask)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_png_is_lossless(name: str) -> None:
    rgb = photo(name)
    data, content_type = encode_image(rgb, "png")
    assert content_type == "image/png" and data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_image(data, max_pixels=10**8), rgb)


def test_jpeg_quality_95() -> None:
    rgb = photo("chelsea")
    data, content_type = encode_image(rgb, "jpg")
    assert content_type == "image/jpeg" and data.startswith(b"\xff\xd8\xff")
    decoded = decode_image(data, max_pixels=10**8)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 2.5
    # Quality 95 is visibly bigger than Pillow's default 75.
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG")
    assert len(data) > 1.5 * len(buffer.getvalue())
    assert not Image.open(io.BytesIO(data)).getexif()  # no metadata


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_encoding_is_deterministic(fmt: str) -> None:
    rgb = photo("rocket")
    assert encode_image(rgb, fmt)[0] == encode_image(rgb.copy(), fmt)[0]


def test_non_contiguous_input_is_fine() -> None:
    rgb = photo("astronaut")[::2, ::-1]
    data, _ = encode_image(rgb, "png")
    np.testing.assert_array_equal(decode_image(data, max_pixels=10**8), rgb)


def test_bad_encode_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown output format"):
        encode_image(photo("astronaut"), "gif")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encode_image(np.zeros((4, 4), np.uint8), "png")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32), "jpg")
