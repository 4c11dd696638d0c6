"""The `classic` engine: CPU exemplar fill (PatchMatch) with no model weights; ignores the prompt.

The image math lives in `patchfill`; this module checks inputs, maps progress and cancellation,
and reports what it did.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn
from fillframe.engines.patchfill import DEFAULT_PARAMS, PatchParams, fill_canvas, patchmatch_ready
from fillframe.errors import Cancelled, InvalidInput


class ClassicEngine(Engine):
    """Fills holes by copying patches from around them; thin strokes by Telea diffusion.

    Safe to call from several threads at once: it keeps no per-call state on the instance.
    """

    name: ClassVar[str] = "classic"
    settings_part: ClassVar[str] = "none"
    uses_prompt: ClassVar[bool] = False
    params: PatchParams = DEFAULT_PARAMS

    def load(self) -> None:
        if not patchmatch_ready():
            raise RuntimeError(
                "The classic engine needs PyPatchMatch's native library, which did not load: "
                "reinstall the `pypatchmatch` package (2.2 or newer) for this platform."
            )
        # No warm-up fill: nothing is compiled (numpy and OpenCV only). With the block-copy
        # fill a process's first job took about 10 ms longer than later ones (512² box 10%);
        # not measured again since the search-and-vote fill.

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        rgb, mask = _checked(job.rgb, job.mask)
        last = [-1]

        def on_step(fraction: float) -> None:
            if cancelled():
                raise Cancelled()
            percent = min(100, max(0, int(fraction * 100)))
            if percent > last[0]:  # monotonic, and no repeats
                last[0] = percent
                progress(percent)

        on_step(0.0)
        if not mask.any():
            on_step(1.0)
            return FillOutput(rgb=rgb.copy(), notes={"engine": self.name, "regions": 0})
        out, regions = fill_canvas(rgb, mask, seed=job.seed, params=self.params, on_step=on_step)
        notes = {
            "engine": self.name,
            "regions": len(regions),
            "diffusion_regions": sum(r.thin for r in regions),
        }
        return FillOutput(rgb=out, notes=notes)


def _checked(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rgb: HxWx3 uint8; mask: HxW (or HxWx1) uint8/bool, nonzero = fill."""
    if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise InvalidInput("The image must be an RGB picture (height x width x 3).")
    if rgb.dtype != np.uint8:
        raise InvalidInput("The image must have 8 bits per channel.")
    if isinstance(mask, np.ndarray) and mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if not (isinstance(mask, np.ndarray) and mask.ndim == 2):
        raise InvalidInput("The mask must be a single-channel picture.")
    if mask.shape != rgb.shape[:2]:
        raise InvalidInput(
            f"The mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{rgb.shape[1]}x{rgb.shape[0]}: send a mask of the image's size."
        )
    mask_u8 = np.ascontiguousarray((mask != 0).astype(np.uint8) * 255)
    if mask.size and bool(mask_u8.all()):
        raise InvalidInput(
            "The mask covers the whole image, so there is nothing to copy from: leave part of "
            "the image unmasked, or use a generative engine."
        )
    return np.ascontiguousarray(rgb), mask_u8
