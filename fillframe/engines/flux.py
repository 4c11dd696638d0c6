"""The `flux` engine: FLUX.1 Fill [dev] through diffusers' FluxFillPipeline, from local weights.

Install with the optional extra `fillframe[flux]`. torch and diffusers are imported inside the
functions below, never at module import, so only a worker process that loads this engine pays
for them (the registry in `base.py` imports this module only when it is chosen).

Weights: `FILLFRAME_FLUX_MODEL` is a local snapshot of black-forest-labs/FLUX.1-Fill-dev in
diffusers layout; `FILLFRAME_FLUX_TRANSFORMER_FILE` may name a single transformer file (diffusers
or original key names) that replaces the folder's transformer. Loading is strictly offline.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fillframe.engines.base import CancelledFn, Engine, FillJob, FillOutput, ProgressFn
from fillframe.errors import Cancelled, EngineFailed

if TYPE_CHECKING:
    import torch
    from diffusers import FluxFillPipeline

    from fillframe.settings import Settings

# The Fill transformer sees noise latents (64) + masked-image latents (64) + packed mask (256).
FILL_IN_CHANNELS = 384
# Canvas sides must be multiples of the VAE factor (8) times the 2x2 latent packing.
SIDE_MULTIPLE = 16
PIPELINE_GUIDANCE_MIN = 1.5
PIPELINE_GUIDANCE_MAX = 100.0
EXTRA_HINT = "install it with: pip install torch==<version for your platform> 'fillframe[flux]'"


def pipeline_guidance(guidance: float, factor: float) -> float:
    """The API's guidance (2-5) as FluxFillPipeline's `guidance_scale`: clamp(factor x g, 1.5, 100).

    With the default factor 10, the API's default 3 gives 30, the value FLUX.1 Fill [dev]'s
    model card uses.
    """
    return float(min(PIPELINE_GUIDANCE_MAX, max(PIPELINE_GUIDANCE_MIN, factor * guidance)))


# --- start-up checks (no torch needed) ------------------------------------------------------


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a .safetensors header, without reading the tensors."""
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short).")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > 100 * 1024 * 1024:
            raise ValueError(f"{path} is not a safetensors file (header length {header_len}).")
        header = json.loads(fh.read(header_len))
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _plain_dev_hint(in_channels: object) -> str:
    return (
        f"its transformer takes {in_channels} input channels, but FLUX.1 Fill [dev] takes "
        f"{FILL_IN_CHANNELS} (a plain FLUX.1-dev has 64): download black-forest-labs/FLUX.1-Fill-dev"
    )


def weights_problem(model_dir: Path | None, transformer_file: Path | None) -> str | None:
    """None when the configured weights look like FLUX.1 Fill [dev], else one sentence why not.

    Reads only JSON configs and safetensors headers, so a wrong folder is refused in
    milliseconds, before gigabytes of weights are read.
    """
    if model_dir is None:
        return (
            "Set FILLFRAME_FLUX_MODEL to a local snapshot of black-forest-labs/FLUX.1-Fill-dev "
            "in diffusers layout."
        )
    if not model_dir.is_dir():
        return f"FILLFRAME_FLUX_MODEL={model_dir} is not a folder."
    if not (model_dir / "model_index.json").is_file():
        return f"FILLFRAME_FLUX_MODEL={model_dir} has no model_index.json, so it is not in diffusers layout."
    config_path = model_dir / "transformer" / "config.json"
    if not config_path.is_file():
        return f"FILLFRAME_FLUX_MODEL={model_dir} has no transformer/config.json."
    try:
        in_channels = json.loads(config_path.read_text()).get("in_channels")
    except (OSError, ValueError) as exc:
        return f"{config_path} could not be read: {exc}."
    if in_channels != FILL_IN_CHANNELS:
        return f"FILLFRAME_FLUX_MODEL={model_dir} is not FLUX.1 Fill [dev]: {_plain_dev_hint(in_channels)}."
    if transformer_file is None:
        return None
    if not transformer_file.is_file():
        return f"FILLFRAME_FLUX_TRANSFORMER_FILE={transformer_file} does not exist."
    try:
        shapes = safetensors_shapes(transformer_file)
    except (OSError, ValueError) as exc:
        return f"FILLFRAME_FLUX_TRANSFORMER_FILE={transformer_file} could not be read: {exc}"
    # Diffusers names the input projection `x_embedder`, BFL's original files `img_in`.
    shape = shapes.get("x_embedder.weight") or shapes.get("img_in.weight")
    if shape is None:
        return (
            f"FILLFRAME_FLUX_TRANSFORMER_FILE={transformer_file} has no x_embedder.weight or "
            "img_in.weight, so it is not a FLUX transformer."
        )
    if shape[-1] != FILL_IN_CHANNELS:
        hint = _plain_dev_hint(shape[-1])
        return f"FILLFRAME_FLUX_TRANSFORMER_FILE={transformer_file} is not FLUX.1 Fill [dev]: {hint}."
    return None


# --- loading ---------------------------------------------------------------------------------


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeError(f"The flux engine needs torch and diffusers: {EXTRA_HINT}.") from None
    return torch


def resolve_device(name: str) -> str:
    """`auto` -> `cuda` when a CUDA GPU is visible, else `cpu`; other names are checked."""
    torch = _import_torch()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"FILLFRAME_FLUX_DEVICE={name}, but torch sees no CUDA GPU.")
    return name


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """One dtype for every component: bfloat16 on a GPU, float32 on the CPU, unless set."""
    torch = _import_torch()
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """diffusers renamed `torch_dtype` to `dtype` (the old name warns); use what it knows."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def load_pipeline(model_dir: Path, transformer_file: Path | None, dtype: torch.dtype) -> FluxFillPipeline:
    """FluxFillPipeline from a local diffusers folder (and an optional transformer file), offline."""
    # huggingface_hub reads this once at import; set before diffusers is first imported.
    os.environ["HF_HUB_OFFLINE"] = "1"
    _import_torch()
    try:
        from diffusers import FluxFillPipeline, FluxTransformer2DModel
    except ImportError:
        raise RuntimeError(f"The flux engine needs diffusers: {EXTRA_HINT}.") from None
    kwargs: dict[str, Any] = {"local_files_only": True, **_dtype_kwargs(dtype)}
    if transformer_file is not None:
        transformer = FluxTransformer2DModel.from_single_file(
            str(transformer_file), config=str(model_dir), subfolder="transformer", **kwargs
        )
        kwargs["transformer"] = transformer
    return FluxFillPipeline.from_pretrained(str(model_dir), **kwargs)


def quantize_fp8(pipe: FluxFillPipeline, device: str) -> None:
    """FP8 (e4m3) dynamic-activation, per-row weight quantization of the transformer, by torchao.

    Done on the GPU (torchao's float8 kernels live there; quantizing 12B weights on the CPU
    would be slow), so the transformer is moved to `device` first.
    """
    torch = _import_torch()
    if not device.startswith("cuda") or torch.cuda.get_device_capability(device) < (8, 9):
        raise RuntimeError("FILLFRAME_FLUX_FP8 needs a CUDA GPU with FP8 support (Ada, Hopper or newer).")
    try:
        from torchao import quantization as tq
    except ImportError:
        raise RuntimeError("FILLFRAME_FLUX_FP8 needs torchao: pip install torchao.") from None
    # torchao renamed its entry points (0.10 configs vs older functions): use what is there.
    granularity = tq.PerRow() if hasattr(tq, "PerRow") else None
    if hasattr(tq, "Float8DynamicActivationFloat8WeightConfig"):
        config = tq.Float8DynamicActivationFloat8WeightConfig(granularity=granularity)
    else:
        config = tq.float8_dynamic_activation_float8_weight(granularity=granularity)
    pipe.transformer.to(device)
    tq.quantize_(pipe.transformer, config)


# --- running ---------------------------------------------------------------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW gray, HxWx3 RGB or HxWx4 RGBA uint8 -> HxWx3 uint8 RGB (alpha dropped)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise EngineFailed(f"The canvas has shape {image.shape}; expected HxWx3 RGB.")


def pad_to_multiple(
    rgb: np.ndarray, fill: np.ndarray, multiple: int = SIDE_MULTIPLE
) -> tuple[np.ndarray, np.ndarray]:
    """Pad right/bottom to multiples of `multiple`: edge pixels, marked as fill.

    rgb: HxWx3 uint8; fill: HxW bool. The padding is cropped off afterwards; marking it as fill
    lets the model continue the picture there rather than treat smeared edges as content.
    """
    height, width = fill.shape
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return rgb, fill
    rgb_p = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    fill_p = np.pad(fill, ((0, pad_h), (0, pad_w)), mode="constant", constant_values=True)
    return rgb_p, fill_p


def composite(original: np.ndarray, generated: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Generated pixels where `fill`, the original's elsewhere (FluxFillPipeline re-renders all)."""
    return np.where(fill[:, :, None], generated, original)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """diffusers' `np` output (1xHxWx3 float in 0..1) -> HxWx3 uint8, rounded as its PIL output is."""
    return (np.clip(images[0], 0.0, 1.0) * 255).round().astype(np.uint8)


class FluxEngine(Engine):
    """FLUX.1 Fill [dev] on this machine. One pipeline per worker process; jobs take turns on it."""

    name: ClassVar[str] = "flux"
    uses_prompt: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pipe: FluxFillPipeline | None = None
        self.device = "cpu"
        self.dtype_name = ""
        # The pipeline keeps per-call state (scheduler timesteps, guidance): one call at a time.
        self._lock = threading.Lock()

    def load(self) -> None:
        """Check the weights folder, load the pipeline and apply the speed settings."""
        s = self.settings
        problem = weights_problem(s.flux_model, s.flux_transformer_file)
        if problem is not None:
            raise RuntimeError(problem)
        assert s.flux_model is not None  # weights_problem refused None
        device = resolve_device(s.flux_device)
        pipe = load_pipeline(s.flux_model, s.flux_transformer_file, resolve_dtype(s.flux_dtype, device))
        self.attach(pipe, device)

    def attach(self, pipe: FluxFillPipeline, device: str) -> None:
        """Place `pipe` on `device` with the configured FP8, CPU offload and compile settings.

        Used by `load` and by bench/gpu.py, which builds pipelines with random weights.
        """
        s = self.settings
        if s.flux_fp8:
            quantize_fp8(pipe, device)  # before offload hooks and compile wrap the transformer
        if s.flux_cpu_offload:
            if not device.startswith("cuda"):
                raise RuntimeError("FILLFRAME_FLUX_CPU_OFFLOAD needs a CUDA GPU; unset it on CPU.")
            # Whole models move to the GPU in turn (text encoders, transformer, VAE): same
            # results as keeping them there, less GPU memory, some seconds more per image.
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if s.flux_compile:
            # In place (nn.Module.compile), so the pipeline keeps its component type; the
            # first job at each new canvas size pays the compilation.
            pipe.transformer.compile()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.device = device
        self.dtype_name = str(pipe.transformer.dtype).removeprefix("torch.")

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        """rgb: HxWx3 uint8 RGB canvas; mask: HxW uint8, 255 = fill. Returns the same size."""
        if self.pipe is None:
            raise EngineFailed("The flux engine was not loaded.")
        rgb = as_rgb(job.rgb)
        fill = job.mask >= 128
        guidance = pipeline_guidance(job.guidance, self.settings.flux_guidance_factor)
        notes: dict[str, Any] = {
            "pipelineGuidance": guidance,
            "guidanceFactor": self.settings.flux_guidance_factor,
            "stepsUsed": job.steps,
            "device": self.device,
            "dtype": self.dtype_name,
            # Said on every job so nobody reads a local result as moderated.
            "moderation": "none: the flux engine runs no safety checker; safety_tolerance has no effect",
        }
        if job.prompt_upsampling:
            notes["promptUpsampling"] = "not available on the flux engine; the prompt was used as given"
        if not fill.any():
            notes["skipped"] = "the mask selects no pixels"
            return FillOutput(rgb.copy(), notes)
        if cancelled():
            raise Cancelled()
        rgb_p, fill_p = pad_to_multiple(rgb, fill)
        if rgb_p.shape != rgb.shape:
            notes["paddedTo"] = [int(rgb_p.shape[0]), int(rgb_p.shape[1])]
        with self._lock:
            generated = self._run(job, rgb_p, fill_p, guidance, progress, cancelled)
        height, width = fill.shape
        out = composite(rgb, generated[:height, :width], fill)
        return FillOutput(np.ascontiguousarray(out), notes)

    def _run(
        self,
        job: FillJob,
        rgb: np.ndarray,
        fill: np.ndarray,
        guidance: float,
        progress: ProgressFn,
        cancelled: CancelledFn,
    ) -> np.ndarray:
        """One pipeline call; rgb: HxWx3 uint8, fill: HxW bool, sides multiples of 16."""
        from PIL import Image

        torch = _import_torch()
        assert self.pipe is not None
        steps = job.steps

        def on_step_end(_pipe: Any, step: int, _timestep: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            progress((step + 1) * 100 // (steps + 1))  # the last share is the VAE decode
            if cancelled():
                raise Cancelled()  # propagates out of the pipeline call at once
            return {}

        # A CPU generator gives the same noise for a seed on any device.
        generator = torch.Generator(device="cpu").manual_seed(job.seed % 2**64)
        height, width = fill.shape
        try:
            with torch.inference_mode():
                result = self.pipe(
                    prompt=job.prompt,
                    image=Image.fromarray(rgb, "RGB"),
                    mask_image=Image.fromarray(fill.astype(np.uint8) * 255, "L"),
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=generator,
                    output_type="np",
                    callback_on_step_end=on_step_end,
                )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise EngineFailed(
                f"The GPU ran out of memory on a {width}x{height} canvas; "
                "try a smaller image or set FILLFRAME_FLUX_CPU_OFFLOAD=true."
            ) from None
        return to_uint8(result.images)
