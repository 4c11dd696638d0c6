"""Outpaint geometry as properties over image sizes, presets and pixel limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fillframe.imaging.canvas import (
    PRESETS,
    CanvasPlan,
    Expansion,
    build_canvas,
    outpaint_canvas,
    outpaint_spec,
    plan_expand,
    plan_outpaint,
)
from tests.utils.images import photo

DEFAULT_MAX = 4 * 1024 * 1024
ZOOM = {"Zoom out 1.5x": 1.5, "Zoom out 2x": 2.0}
HORIZONTAL = {"Left outpaint", "Right outpaint"}
VERTICAL = {"Top outpaint", "Bottom outpaint"}

sides = st.integers(1, 6000)
presets = st.sampled_from(PRESETS)
limits = st.one_of(st.just(DEFAULT_MAX), st.integers(256, 40_000_000), st.integers(256, 20_000))
fast = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def smallest_multiple_above(n: int) -> int:
    return (n // 16 + 1) * 16


def ceil16(n: int) -> int:
    return -(-n // 16) * 16


def assert_side(side: int, target: float, image_side: int) -> None:
    """Nearest multiple of 16 to `target`, unless that would not leave room to grow."""
    nearest_ok = abs(side - target) <= 8
    assert nearest_ok or side == smallest_multiple_above(image_side), (side, target, image_side)
    assert side > image_side


@fast
@given(width=sides, height=sides, preset=presets, max_pixels=limits)
@example(width=512, height=512, preset="Make square", max_pixels=DEFAULT_MAX)
@example(width=6000, height=1, preset="Top outpaint", max_pixels=256)
@example(width=1, height=6000, preset="Zoom out 2x", max_pixels=256)
@example(width=16, height=16, preset="Zoom out 1.5x", max_pixels=DEFAULT_MAX)
def test_plan_properties(width: int, height: int, preset: str, max_pixels: int) -> None:
    plan = plan_outpaint(width, height, preset, max_pixels)
    cw, ch, x, y, iw, ih = (
        plan.width,
        plan.height,
        plan.x,
        plan.y,
        plan.image_width,
        plan.image_height,
    )

    # FLUX sizes, within the pixel budget, image inside the canvas.
    assert cw % 16 == 0 and ch % 16 == 0 and cw >= 16 and ch >= 16
    assert cw * ch <= max_pixels
    assert 0 <= x <= cw - iw and 0 <= y <= ch - ih

    # Scaled down only, uniformly: the aspect ratio holds within one pixel of rounding.
    assert 1 <= iw <= width and 1 <= ih <= height
    slack = 0.5 * (width + height) if iw > 1 and ih > 1 else width + height
    assert abs(iw * height - ih * width) <= slack
    if (iw, ih) != (width, height):
        # ... and only when the unscaled canvas would not fit.
        natural = plan_outpaint(width, height, preset, 10**12)
        assert natural.width * natural.height > max_pixels

    centred_x, centred_y = (cw - iw) // 2, (ch - ih) // 2
    if preset in ZOOM:
        assert (x, y) == (centred_x, centred_y)
        assert_side(cw, ZOOM[preset] * iw, iw)
        assert_side(ch, ZOOM[preset] * ih, ih)
    elif preset == "Make square":
        assert cw == ch == ceil16(max(iw, ih))
        assert (x, y) == (centred_x, centred_y)
    elif preset in HORIZONTAL:
        assert x == (cw - iw if preset == "Left outpaint" else 0)
        assert y == centred_y
        assert_side(cw, 1.5 * iw, iw)
        assert ch == ceil16(ih)  # the other axis only rounds up to 16
    else:
        assert y == (ch - ih if preset == "Top outpaint" else 0)
        assert x == centred_x
        assert_side(ch, 1.5 * ih, ih)
        assert cw == ceil16(iw)

    # New area is non-empty, except Make square on an image already square at a 16-multiple.
    assert plan.adds_area == (preset != "Make square" or iw != ih or iw % 16 != 0)


@fast
@given(
    width=st.integers(1, 240),
    height=st.integers(1, 240),
    preset=presets,
    max_pixels=st.one_of(st.just(DEFAULT_MAX), st.integers(256, 60_000)),
    seed=st.integers(0, 2**32 - 1),
)
def test_mask_is_exactly_the_new_area(
    width: int, height: int, preset: str, max_pixels: int, seed: int
) -> None:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    canvas, mask, plan = outpaint_canvas(rgb, preset, max_pixels)
    assert canvas.shape == (plan.height, plan.width, 3) and canvas.dtype == np.uint8
    assert mask.shape == (plan.height, plan.width) and mask.dtype == np.uint8

    inside = np.zeros((plan.height, plan.width), bool)
    inside[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width] = True
    np.testing.assert_array_equal(mask, np.where(inside, 0, 255))

    placed = canvas[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width]
    if (plan.image_width, plan.image_height) == (width, height):
        np.testing.assert_array_equal(placed, rgb)  # unscaled: bit-identical

    # The new area repeats the nearest edge pixel of the placed image.
    ys = np.clip(np.arange(plan.height) - plan.y, 0, plan.image_height - 1)
    xs = np.clip(np.arange(plan.width) - plan.x, 0, plan.image_width - 1)
    np.testing.assert_array_equal(canvas, placed[ys][:, xs])


@pytest.mark.parametrize("preset", PRESETS)
def test_photo_within_default_budget_is_placed_unchanged(preset: str) -> None:
    rgb = photo("chelsea")  # 451x300
    canvas, mask, plan = outpaint_canvas(rgb, preset, DEFAULT_MAX)
    assert (plan.image_width, plan.image_height) == (451, 300)
    np.testing.assert_array_equal(canvas[plan.y : plan.y + 300, plan.x : plan.x + 451], rgb)
    assert mask.sum() // 255 == plan.width * plan.height - 451 * 300


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("Zoom out 1.5x", CanvasPlan(768, 448, 128, 74, 512, 300)),
        ("Zoom out 2x", CanvasPlan(1024, 608, 256, 154, 512, 300)),
        ("Make square", CanvasPlan(512, 512, 0, 106, 512, 300)),
        ("Left outpaint", CanvasPlan(768, 304, 256, 2, 512, 300)),
        ("Right outpaint", CanvasPlan(768, 304, 0, 2, 512, 300)),
        ("Top outpaint", CanvasPlan(512, 448, 0, 148, 512, 300)),
        ("Bottom outpaint", CanvasPlan(512, 448, 0, 0, 512, 300)),
    ],
)
def test_worked_examples(preset: str, expected: CanvasPlan) -> None:
    assert plan_outpaint(512, 300, preset, DEFAULT_MAX) == expected


@pytest.mark.parametrize("preset", PRESETS)
def test_large_photo_is_scaled_to_fill_most_of_the_budget(preset: str) -> None:
    plan = plan_outpaint(6000, 4000, preset, DEFAULT_MAX)
    area = plan.width * plan.height
    assert 0.85 * DEFAULT_MAX < area <= DEFAULT_MAX
    assert math.isclose(plan.image_width / plan.image_height, 1.5, rel_tol=2e-3)


def test_downscaled_canvas_uses_area_resampling() -> None:
    rgb = photo("astronaut")  # 512x512 -> zoom 2x wants 1024x1024 = 1 MP
    canvas, mask, plan = outpaint_canvas(rgb, "Zoom out 2x", 256 * 256)
    assert plan.image_width == plan.image_height < 512
    placed = canvas[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width]
    # Area averaging keeps the mean colour where nearest-neighbour sampling would drift.
    assert np.abs(placed.mean(axis=(0, 1)) - rgb.mean(axis=(0, 1))).max() < 1.0
    assert (mask[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width] == 0).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((512, 512, "Zoom out 3x", DEFAULT_MAX), "Unknown outpaint preset"),
        ((0, 512, "Make square", DEFAULT_MAX), "not valid"),
        ((512, 512, "Make square", 255), "at least 256"),
    ],
)
def test_bad_arguments(args: tuple[int, int, str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_outpaint(*args)


def test_build_canvas_rejects_non_rgb() -> None:
    plan = plan_outpaint(8, 8, "Zoom out 2x", DEFAULT_MAX)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        build_canvas(np.zeros((8, 8), np.uint8), plan)


# --- free expansion (fluxFillParams.expand) ---------------------------------------------------

strips = st.integers(0, 2048)
expansions = st.builds(Expansion, strips, strips, strips, strips).filter(
    lambda e: e.left + e.right + e.top + e.bottom > 0
)


def assert_expand_axis(side: int, image_side: int, before: float, after: float, offset: int) -> None:
    """One axis of an expand plan: the presets' rounding, the slack shared by what was asked."""
    if before + after == 0:
        assert side == ceil16(image_side) and offset == (side - image_side) // 2
        return
    assert_side(side, image_side + before + after, image_side)
    assert 0 <= offset <= side - image_side
    if before == 0:
        assert offset == 0  # a side that asked for nothing stays flush with the edge
    if after == 0:
        assert offset == side - image_side
    # Within the rounding's slack (and one pixel of rounding) of what was asked.
    slack = abs(side - (image_side + before + after))
    assert abs(offset - before) <= slack + 1


@fast
@given(width=sides, height=sides, expansion=expansions, max_pixels=limits)
@example(width=1, height=1, expansion=Expansion(2048, 2048, 2048, 2048), max_pixels=256)
@example(width=6000, height=4000, expansion=Expansion(left=2048), max_pixels=DEFAULT_MAX)
@example(width=512, height=300, expansion=Expansion(right=1), max_pixels=DEFAULT_MAX)
def test_expand_plan_properties(width: int, height: int, expansion: Expansion, max_pixels: int) -> None:
    plan = plan_expand(width, height, expansion, max_pixels)
    cw, ch, iw, ih = plan.width, plan.height, plan.image_width, plan.image_height
    assert cw % 16 == 0 and ch % 16 == 0 and cw * ch <= max_pixels
    assert 1 <= iw <= width and 1 <= ih <= height
    slack = 0.5 * (width + height) if iw > 1 and ih > 1 else width + height
    assert abs(iw * height - ih * width) <= slack  # scaled uniformly, if at all
    natural = plan_expand(width, height, expansion, 10**13)
    if plan != natural:
        assert natural.width * natural.height > max_pixels  # scaled only when it must be
        # The strips scaled with the image (a 1-pixel side can stay 1 pixel while they shrink);
        # the per-axis rules below are those of the full-size plan.
        return
    e = expansion
    assert_expand_axis(cw, iw, e.left, e.right, plan.x)
    assert_expand_axis(ch, ih, e.top, e.bottom, plan.y)
    assert plan.adds_area


@fast
@given(
    width=st.integers(1, 200),
    height=st.integers(1, 200),
    expansion=st.builds(Expansion, *[st.integers(0, 300)] * 4).filter(lambda e: e.left + e.top > 0),
    seed=st.integers(0, 2**32 - 1),
)
def test_expand_mask_is_exactly_the_new_area(
    width: int, height: int, expansion: Expansion, seed: int
) -> None:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    canvas, mask, plan = outpaint_canvas(rgb, expansion, DEFAULT_MAX)
    inside = np.zeros((plan.height, plan.width), bool)
    inside[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width] = True
    np.testing.assert_array_equal(mask, np.where(inside, 0, 255))
    placed = canvas[plan.y : plan.y + plan.image_height, plan.x : plan.x + plan.image_width]
    np.testing.assert_array_equal(placed, rgb)


@pytest.mark.parametrize(
    ("expansion", "expected"),
    [
        (Expansion(left=256), CanvasPlan(768, 304, 256, 2, 512, 300)),  # = Left outpaint
        (Expansion(left=100, right=100), CanvasPlan(720, 304, 104, 2, 512, 300)),  # 712 rounds to 720
        (Expansion(top=20), CanvasPlan(512, 320, 0, 20, 512, 300)),
        (Expansion(bottom=1), CanvasPlan(512, 304, 0, 0, 512, 300)),
    ],
)
def test_expand_worked_examples(expansion: Expansion, expected: CanvasPlan) -> None:
    assert plan_expand(512, 300, expansion, DEFAULT_MAX) == expected


def test_outpaint_spec_reads_expand_before_the_preset() -> None:
    assert outpaint_spec({"outpaint": "Make square"}) == "Make square"
    assert outpaint_spec({}) == "Zoom out 1.5x"
    assert outpaint_spec({"outpaint": "Zoom out 1.5x", "expand": {"left": 5}}) == Expansion(left=5)
    with pytest.raises(ValueError, match=">= 0"):
        plan_expand(10, 10, Expansion(left=-1), DEFAULT_MAX)
