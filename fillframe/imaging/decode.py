"""Decoding untrusted image and mask bytes into arrays, with the pixel limit checked first.

Only JPEG, PNG and WebP are decoded; the format is sniffed from the bytes, never trusted
from a name or a content type. The width and height are read from the header and checked
against `max_pixels` before any pixel is decoded, so a tiny file that claims 30000x30000
is refused without allocating. Pillow's plugin classes are used directly, so Pillow's global
`MAX_IMAGE_PIXELS` is neither read nor changed here: the limit is the caller's.

EXIF orientation is applied; for animated files the first frame is used; colour profiles are
not converted (pixels are taken as sRGB).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from fillframe.errors import InvalidInput

_DECODERS: dict[str, type[ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WebP": WebPImagePlugin.WebPImageFile,
}

# Formats people send that we refuse, named so the error says what was received.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)

_CORRUPT = "The {what} could not be decoded: the file is truncated or corrupt."


def sniff_format(data: bytes) -> str | None:
    """ "JPEG", "PNG" or "WebP" from the leading bytes, else the name of another known format
    ("GIF", "HEIC", "SVG", ...), else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC"
    for magic, name in _OTHER_MAGIC:
        if data.startswith(magic):
            return name
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        return "SVG"
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a WebP header; libwebp allocates the canvas on open, so the
    limit has to be checked before Pillow sees the file."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise InvalidInput(_CORRUPT.format(what=what))
    if width * height > max_pixels:
        raise InvalidInput(
            f"The {what} is {width}x{height} ({width * height:,} pixels); "
            f"at most {max_pixels:,} pixels are accepted."
        )


def _open_checked(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """Sniff, check the header size, decode, apply EXIF orientation. Any mode comes back."""
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidInput(f"The {what} is not a JPEG, PNG or WebP file.")
    if fmt not in _DECODERS:
        raise InvalidInput(f"The {what} is a {fmt} file; only JPEG, PNG and WebP are accepted.")
    if fmt == "WebP":
        size = _webp_size(data)
        if size is None:
            raise InvalidInput(_CORRUPT.format(what=what))
        _check_pixels(*size, max_pixels, what)
    try:
        # The plugin class reads the header only: no pixel is decoded yet.
        image: Image.Image = _DECODERS[fmt](io.BytesIO(data))
        _check_pixels(image.width, image.height, max_pixels, what)
        image.load()
    except InvalidInput:
        raise
    except Image.DecompressionBombError:
        raise InvalidInput(f"The {what} has too many pixels to be decoded.") from None
    except (OSError, SyntaxError, ValueError, IndexError, struct.error, EOFError, MemoryError):
        raise InvalidInput(_CORRUPT.format(what=what)) from None
    try:
        oriented = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        # A broken EXIF block is common and harmless: keep the pixels as stored.
        oriented = image
    return oriented if oriented is not None else image


def _to_8bit(image: Image.Image) -> Image.Image:
    """Single-channel 16/32-bit and float images as "L": Pillow's convert clips instead of
    scaling, which would turn a 16-bit photo white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit PNG greys arrive as "I;16" or "I"; both hold 0..65535.
        values = np.asarray(image, dtype=np.float64)
        scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.size and float(values.max()) <= 1.0 else 255.0
        scaled = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def decode_image(data: bytes, *, max_pixels: int, what: str = "image") -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to an HxWx3 uint8 RGB array (C-contiguous, writable).

    Transparency is flattened onto white; grey, palette, CMYK and 16-bit images become RGB.
    Raises InvalidInput for other formats, corrupt or truncated files, or more than
    `max_pixels` pixels (checked from the header, before decoding).
    """
    image = _to_8bit(_open_checked(data, max_pixels, what))
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def decode_mask(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode mask bytes to an HxW uint8 array, 255 = repaint, 0 = keep.

    Rule: the mask is the luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) binarised at
    128 (>= 128 -> 255). A uniform alpha channel is ignored. Where alpha varies, the mask is
    what the file shows over black, so white strokes on a transparent layer mark the repaint
    area whatever colour hides under the transparent part; and when the colour is flat and
    only alpha varies (black strokes on a transparent layer, a pure alpha matte), the alpha
    channel is the mask: opaque = repaint.
    EXIF orientation is applied, so the mask lines up with an EXIF-rotated photo.
    """
    image = _to_8bit(_open_checked(data, max_pixels, "mask"))
    if _has_alpha(image):
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3].astype(np.uint16)
        luma = np.asarray(Image.fromarray(rgba[..., :3], mode="RGB").convert("L"), np.uint16)
        alpha_varies = alpha.min() != alpha.max()
        if alpha_varies and luma.min() == luma.max():
            values = alpha
        elif alpha_varies:
            values = (luma * alpha + 127) // 255  # composited over black
        else:
            values = luma
    else:
        values = np.asarray(image.convert("L"), dtype=np.uint16)
    return np.where(values >= 128, 255, 0).astype(np.uint8)
