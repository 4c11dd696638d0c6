"""What a caller hands `edit` turned into what the API takes: request bodies and file parts.

Pillow and numpy are optional: they are imported only when a caller passes an image or array,
which means the caller has them.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict, cast

from fillframe_client.contract import EXTRA_PARAMS, MODEL

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    Source: TypeAlias = str | os.PathLike[str] | bytes | Image.Image | np.ndarray
else:
    Source: TypeAlias = Any

_URL_OR_DATA = re.compile(r"^(https?://|data:image/)", re.IGNORECASE)


class Expansion(TypedDict, total=False):
    """Pixels to add on each side of the image (0-2048 each, at least one above 0)."""

    left: int
    right: int
    top: int
    bottom: int


class EditOptions(TypedDict, total=False):
    """The keyword arguments `edit` and `edit_and_wait` take besides `image` and `prompt`."""

    mask: Source | None
    mode: Literal["inpaint", "outpaint"] | None
    outpaint: str | None
    idempotency_key: str | None
    webhook_url: str | None
    webhook_events: list[str] | None
    # The other fluxFillParams, sent as given (the server checks their bounds).
    expand: Expansion  # instead of an `outpaint` preset; implies outpaint mode
    steps: int
    guidance: float
    safety_tolerance: int
    output_format: Literal["jpg", "png"]
    seed: int
    prompt_upsampling: bool


_SPEC_OPTIONS = ("mask", "mode", "outpaint", "idempotency_key", "webhook_url", "webhook_events")


@dataclass(frozen=True)
class EditSpec:
    """What a caller asked `edit` for, before local content is uploaded."""

    image: Source
    prompt: str
    mask: Source | None = None
    mode: str | None = None
    outpaint: str | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, image: Source, prompt: str, options: Mapping[str, Any]) -> EditSpec:
        """The spec for `edit(image, prompt=..., **options)`: named options, the rest fluxFillParams."""
        named = {k: v for k, v in options.items() if k in _SPEC_OPTIONS}
        params = {k: v for k, v in options.items() if k not in _SPEC_OPTIONS}
        return cls(image, prompt, params=params, **named)


def check_params(params: Mapping[str, Any]) -> None:
    """Raise TypeError for a keyword that is not a fluxFillParams field (before any upload)."""
    unknown = sorted(set(params) - EXTRA_PARAMS)
    if unknown:
        raise TypeError(f"Unknown fluxFillParams {unknown}; known: {', '.join(sorted(EXTRA_PARAMS))}.")


def infer_mode(mode: str | None, mask: object, outpaint: str | None, expand: object = None) -> str:
    """`mode` as given, else "outpaint" when only a preset or an `expand` is given, else "inpaint"."""
    if mode is not None:
        return mode
    return "outpaint" if (outpaint is not None or expand) and mask is None else "inpaint"


def edit_body(
    image: str,
    *,
    prompt: str,
    mode: str,
    mask: str | None = None,
    outpaint: str | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /v2/images/edit`; `image`/`mask` are URLs or data URIs by now."""
    params = dict(params or {})
    check_params(params)
    fill: dict[str, Any] = {"image": image, "prompt": prompt, "mode": mode}
    if mode == "inpaint" and mask is not None:
        fill["mask"] = mask
    if mode == "outpaint" and outpaint is not None:
        fill["outpaint"] = outpaint
    fill.update({k: v for k, v in params.items() if v is not None})
    body: dict[str, Any] = {"model": MODEL, "fluxFillParams": fill}
    if webhook_url is not None:
        body["webhookUrl"] = webhook_url
    if webhook_events is not None:
        body["webhookEvents"] = list(webhook_events)
    return body


def file_part(value: Source, what: str) -> tuple[str, bytes, str] | str:
    """A reference the API takes as is (http(s) URL, data URI), or `(filename, bytes, type)` to upload.

    value: a URL or data URI (str); a local path (str or PathLike); raw bytes; a PIL image; or a
    numpy array (HxW or HxWx3/4 uint8), which is sent as PNG. The server sniffs the real type.
    """
    if isinstance(value, str) and _URL_OR_DATA.match(value):
        return value
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"The {what} file {str(path)!r} does not exist.")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return path.name, path.read_bytes(), mime
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{what}.bin", bytes(value), "application/octet-stream"
    return f"{what}.png", _png(value, what), "image/png"


def _png(value: object, what: str) -> bytes:
    """A PIL image or numpy array as PNG bytes; anything else is a TypeError."""
    kind = type(value)
    # Judge by the defining module, so a caller without Pillow or numpy never imports them.
    module = kind.__module__.split(".")[0]
    if module not in ("PIL", "numpy"):
        raise TypeError(
            f"The {what} must be a URL, a data URI, a path, bytes, a PIL image or a numpy array, "
            f"not {kind.__name__}."
        )
    from PIL import Image

    image = value if isinstance(value, Image.Image) else Image.fromarray(cast("np.ndarray", value))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
