"""Crop planning and the paste back (fillframe/imaging/crops.py), on real photos."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fillframe.imaging.crops import (
    Box,
    Crop,
    crop_inputs,
    fits,
    merge_boxes,
    paste,
    plan_crops,
    region_boxes,
    work_size,
)
from tests.utils.images import photo


def holes(height: int, width: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    fill = np.zeros((height, width), bool)
    for x, y, w, h in boxes:
        fill[y : y + h, x : x + w] = True
    return fill


def test_two_distant_holes_give_two_crops_near_ones_merge() -> None:
    fill = holes(3000, 4000, (200, 200, 100, 80), (3500, 2600, 120, 150))
    crops = plan_crops(fill, 1024 * 1024)
    assert len(crops) == 2
    first, second = (c.box for c in crops)
    assert (first.x0, first.y0) == (0, 0)  # 256 px of context, clipped at the frame's edge
    assert first.x1 >= 300 + 256 and first.y1 >= 280 + 256
    assert second.x1 >= 3620 + 256 and second.y1 == 3000  # 2750 + 256 is past the edge
    near = holes(3000, 4000, (1000, 1000, 100, 100), (1500, 1000, 100, 100))
    assert len(plan_crops(near, 1024 * 1024)) == 1


def test_context_is_half_the_box_but_at_least_the_minimum() -> None:
    fill = holes(6000, 6000, (2000, 2000, 1000, 200))
    (crop,) = plan_crops(fill, 4 * 1024 * 1024, context=0.5, min_context=256)
    assert crop.box.x0 <= 2000 - 500 and crop.box.x1 >= 3000 + 500
    assert crop.box.y0 <= 2000 - 256 and crop.box.y1 >= 2200 + 256


def test_a_large_crop_is_scaled_to_the_budget_with_sides_of_16() -> None:
    fill = holes(4000, 6000, (1000, 1000, 3000, 2000))
    (crop,) = plan_crops(fill, 1024 * 1024)
    assert crop.work_width * crop.work_height <= 1024 * 1024
    assert crop.work_width % 16 == 0 and crop.work_height % 16 == 0
    assert crop.scale < 0.5
    aspect = crop.box.width / crop.box.height
    assert abs(crop.work_width / crop.work_height - aspect) < 0.05
    note = crop.note()
    assert note["box"][2:] == [crop.box.width, crop.box.height] and note["size"][0] == crop.work_width


def test_small_crop_is_not_scaled_and_grown_to_multiples_of_16() -> None:
    fill = holes(3000, 4000, (1000, 1000, 50, 50))
    (crop,) = plan_crops(fill, 1024 * 1024)
    assert crop.scale == 1.0
    assert crop.box.width % 16 == 0 and crop.box.height % 16 == 0
    assert (crop.work_width, crop.work_height) == (crop.box.width, crop.box.height)


def test_fits_counts_the_padded_canvas() -> None:
    assert fits(1024, 1024, 1024 * 1024)
    assert not fits(1025, 1024, 1024 * 1024)  # pads to 1040 wide


def test_crop_inputs_mark_every_touched_work_pixel_as_fill() -> None:
    rgb = photo("astronaut", (2048, 2048))
    fill = holes(2048, 2048, (301, 301, 7, 7))
    crop = Crop(Box(0, 0, 2048, 2048), 512, 512)
    small_rgb, small_fill = crop_inputs(rgb, fill, crop)
    assert small_rgb.shape == (512, 512, 3) and small_fill.shape == (512, 512)
    assert small_fill[75:77, 75:77].all()  # 301/4 .. 308/4
    assert small_fill.sum() <= 9


def test_paste_keeps_every_unmasked_pixel_and_feathers_inside_the_mask() -> None:
    rgb = photo("chelsea", (800, 600))
    fill = holes(600, 800, (300, 200, 200, 150))
    crop = Crop(Box(100, 100, 700, 500), 300, 200)
    generated = np.full((200, 300, 3), (0, 255, 0), np.uint8)
    out = rgb.copy()
    paste(out, fill, crop, generated)
    assert np.array_equal(out[~fill], rgb[~fill])
    assert (out[275, 400] == (0, 255, 0)).all()  # the hole's middle is the model's
    rim, inner = out[200, 400].astype(int), out[210, 400].astype(int)
    assert abs(rim[1] - 255) > abs(inner[1] - 255)  # a ramp at the hole's edge, inside it


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(32, 3000),
    height=st.integers(32, 3000),
    spots=st.lists(
        st.tuples(st.floats(0, 0.95), st.floats(0, 0.95), st.integers(1, 400)), min_size=1, max_size=4
    ),
    budget=st.sampled_from([256, 4096, 65536, 1024 * 1024]),
)
def test_crops_cover_every_hole_pixel_within_the_budget(
    width: int, height: int, spots: list[tuple[float, float, int]], budget: int
) -> None:
    fill = np.zeros((height, width), bool)
    for fx, fy, side in spots:
        x, y = int(fx * width), int(fy * height)
        fill[y : y + side, x : x + side] = True
    crops = plan_crops(fill, budget, context=0.5, min_context=64)
    covered = np.zeros_like(fill)
    for crop in crops:
        b = crop.box
        assert 0 <= b.x0 < b.x1 <= width and 0 <= b.y0 < b.y1 <= height
        assert crop.work_width * crop.work_height <= max(budget, 256)
        assert crop.work_width % 16 == 0 and crop.work_height % 16 == 0
        covered[b.y0 : b.y1, b.x0 : b.x1] = True
    assert covered[fill].all()
    boxes = [c.box for c in crops]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_region_boxes_and_merge() -> None:
    fill = holes(100, 100, (10, 10, 5, 5), (50, 60, 10, 3))
    assert region_boxes(fill) == [Box(10, 10, 15, 15), Box(50, 60, 60, 63)]
    chain = [Box(0, 0, 10, 10), Box(20, 0, 30, 10), Box(5, 0, 25, 5)]
    assert merge_boxes(chain) == [Box(0, 0, 30, 10)]
    assert work_size(100, 100, 10**6) == (96, 96)
