"""The image side: fetch (URL guard, data URI), decode, masks, outpaint canvas, encode."""

from fillframe.imaging.canvas import PRESETS, CanvasPlan, build_canvas, outpaint_canvas, plan_outpaint
from fillframe.imaging.decode import decode_image, decode_mask
from fillframe.imaging.encode import encode_image
from fillframe.imaging.fetch import check_url, fetch_url, load_source, parse_data_uri
from fillframe.imaging.masks import check_same_size, dilate, mask_bbox

__all__ = [
    "PRESETS",
    "CanvasPlan",
    "build_canvas",
    "check_same_size",
    "check_url",
    "decode_image",
    "decode_mask",
    "dilate",
    "encode_image",
    "fetch_url",
    "load_source",
    "mask_bbox",
    "outpaint_canvas",
    "parse_data_uri",
    "plan_outpaint",
]
