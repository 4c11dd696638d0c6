"""The slice of the wire contract (Apiframe v2, `flux-fill-pro`) this client states for itself.

The client does not import the server: these names are written here, and the server's test suite
checks them against `fillframe.contract` so the two cannot drift.
"""

from __future__ import annotations

MODEL = "flux-fill-pro"
STATUSES = ("QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED")
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# Every field of `fluxFillParams`, in the contract's order.
FLUX_FILL_PARAMS = (
    "image",
    "prompt",
    "mode",
    "mask",
    "outpaint",
    "expand",
    "steps",
    "guidance",
    "safety_tolerance",
    "output_format",
    "seed",
    "prompt_upsampling",
)
# The fields `edit` takes as named arguments; the rest are passed as keyword `params`.
NAMED_PARAMS = frozenset({"image", "mask", "prompt", "mode", "outpaint"})
EXTRA_PARAMS = frozenset(FLUX_FILL_PARAMS) - NAMED_PARAMS
