"""The `flux` engine: FLUX.1 Fill [dev] through diffusers' FluxFillPipeline, from local weights.

Install with the optional extra `fillframe[flux]`. torch and diffusers are imported inside the
functions below, never at module import, so only a worker process that loads this engine pays
for them (the registry in `base.py` imports this module only when it is chosen).

Weights: `FILLFRAME_FLUX_MODEL` is a local snapshot of black-forest-labs/FLUX.1-Fill-dev in
diffusers layout; `FILLFRAME_FLUX_TRANSFORMER_FILE` may name a single transformer file (diffusers
or original key names) that replaces the folder's transformer. Loading is strictly offline.
"""

from __future__ import annotations

import gc
import json
import os
import struct
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fillframe.engines.base import (
    CancelledFn,
    Engine,
    FillJob,
    FillOutput,
    ProgressFn,
    fill_one,
    slice_progress,
)
from fillframe.errors import Cancelled, EngineFailed
from fillframe.imaging.crops import Crop, crop_inputs, fits, paste, plan_crops

if TYPE_CHECKING:
    import torch
    from diffusers import FluxFillPipeline

    from fillframe.settings import FluxSettings

# The Fill transformer sees noise latents (64) + masked-image latents (64) + packed mask (256).
FILL_IN_CHANNELS = 384
# Canvas sides must be multiples of the VAE factor (8) times the 2x2 latent packing.
SIDE_MULTIPLE = 16
PIPELINE_GUIDANCE_MIN = 1.5
PIPELINE_GUIDANCE_MAX = 100.0
COMFY_PREFIX = "model.diffusion_model."
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
    # Diffusers names the input projection `x_embedder`, BFL's original files `img_in`;
    # ComfyUI's files prefix the original names (diffusers strips the prefix when loading).
    names = [
        prefix + name for prefix in ("", COMFY_PREFIX) for name in ("x_embedder.weight", "img_in.weight")
    ]
    shape = next((shapes[name] for name in names if name in shapes), None)
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


def auto_device(cuda_count: int, worker_index: int | None) -> str:
    """`auto`'s choice: `cpu` without GPUs, else one GPU per worker, `cuda:(index mod count)`.

    Without an index every worker takes `cuda:0`: right when each worker is started with its
    own CUDA_VISIBLE_DEVICES (then it sees one GPU), wrong when they all see every GPU.
    """
    if cuda_count < 1:
        return "cpu"
    return f"cuda:{(worker_index or 0) % cuda_count}"


def resolve_device(name: str, worker_index: int | None = None) -> str:
    """`auto` -> `auto_device(...)`; other names are checked against what torch sees."""
    torch = _import_torch()
    if name == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return auto_device(count, worker_index)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"FILLFRAME_FLUX_DEVICE={name}, but torch sees no CUDA GPU.")
    return name


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """One dtype for every component: bfloat16 on a GPU, float32 on the CPU, unless set."""
    lib = _import_torch()
    choices: dict[str, torch.dtype] = {
        "bfloat16": lib.bfloat16,
        "float16": lib.float16,
        "float32": lib.float32,
    }
    if name == "auto":
        return choices["bfloat16" if device.startswith("cuda") else "float32"]
    return choices[name]


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """diffusers renamed `torch_dtype` to `dtype` (the old name warns); use what it knows."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def fp8_config(dtype: torch.dtype, device: str) -> Any:
    """diffusers' TorchAoConfig for FP8 (e4m3) dynamic activations and per-row weights.

    Given to `from_pretrained`, so each weight is quantized as it is loaded, on the CPU: the
    bf16 transformer (~24 GB) never has to fit on the GPU whole, which is what FP8 is for on
    16-24 GB cards. torchao's float8 path takes bfloat16 weights only.
    """
    torch = _import_torch()
    if dtype != torch.bfloat16:
        name = str(dtype).removeprefix("torch.")
        raise RuntimeError(
            f"FILLFRAME_FLUX_FP8 quantizes bfloat16 weights, but the dtype is {name}: "
            "set FILLFRAME_FLUX_DTYPE=bfloat16 (or auto on a GPU), or unset FILLFRAME_FLUX_FP8."
        )
    # torchao checks for FP8 hardware while quantizing; say so before any weight is read.
    if not device.startswith("cuda") or torch.cuda.get_device_capability(device) < (8, 9):
        raise RuntimeError(
            "FILLFRAME_FLUX_FP8 needs a CUDA GPU with FP8 support (Ada, Hopper or newer); "
            f"the device is {device}."
        )
    from diffusers import TorchAoConfig

    return TorchAoConfig(fp8_quant_type())


def fp8_quant_type() -> Any:
    """torchao's FP8 (e4m3) dynamic-activation, per-row-weight config (bench/gpu.py uses it too)."""
    try:
        from torchao import quantization as tq
    except ImportError:
        raise RuntimeError("FILLFRAME_FLUX_FP8 needs torchao: pip install torchao.") from None
    return tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow())


def load_pipeline(
    model_dir: Path,
    transformer_file: Path | None,
    dtype: torch.dtype,
    quantization: Any = None,
) -> FluxFillPipeline:
    """FluxFillPipeline from a local diffusers folder (and an optional transformer file), offline.

    `quantization` (a TorchAoConfig) applies to the transformer only, as it is read.
    """
    # huggingface_hub reads this once at import; set before diffusers is first imported.
    os.environ["HF_HUB_OFFLINE"] = "1"
    _import_torch()
    try:
        from diffusers import FluxFillPipeline, FluxTransformer2DModel
    except ImportError:
        raise RuntimeError(f"The flux engine needs diffusers: {EXTRA_HINT}.") from None
    kwargs: dict[str, Any] = {"local_files_only": True, **_dtype_kwargs(dtype)}
    extra = {} if quantization is None else {"quantization_config": quantization}
    if transformer_file is not None:
        transformer = FluxTransformer2DModel.from_single_file(
            str(transformer_file), config=str(model_dir), subfolder="transformer", **kwargs, **extra
        )
    elif quantization is not None:
        transformer = FluxTransformer2DModel.from_pretrained(
            str(model_dir), subfolder="transformer", **kwargs, **extra
        )
    else:
        return FluxFillPipeline.from_pretrained(str(model_dir), **kwargs)
    return FluxFillPipeline.from_pretrained(str(model_dir), transformer=transformer, **kwargs)


def parse_size(text: str) -> tuple[int, int]:
    """ "1024x768" -> (1024, 768); sides must be positive multiples of 16."""
    width_s, sep, height_s = text.lower().partition("x")
    if not (sep and width_s.strip().isdigit() and height_s.strip().isdigit()):
        raise RuntimeError(f"FILLFRAME_FLUX_WARMUP_SIZES: {text!r} is not WIDTHxHEIGHT.")
    width, height = int(width_s), int(height_s)
    if width < SIDE_MULTIPLE or height < SIDE_MULTIPLE or width % SIDE_MULTIPLE or height % SIDE_MULTIPLE:
        raise RuntimeError(f"FILLFRAME_FLUX_WARMUP_SIZES: {text!r} needs sides that are multiples of 16.")
    return width, height


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


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """diffusers' `np` output (NxHxWx3 float in 0..1) -> N HxWx3 uint8, rounded as its PIL output is."""
    return [(np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8) for image in images]


@dataclass
class Call:
    """One image of a pipeline call: rgb HxWx3 uint8 and fill HxW bool, sides multiples of 16."""

    prompt: str
    rgb: np.ndarray
    fill: np.ndarray
    seed: int
    progress: ProgressFn
    cancelled: CancelledFn


@dataclass
class Plan:
    """A job made ready to run: its notes so far and either one padded canvas or crops."""

    job: FillJob
    rgb: np.ndarray  # HxWx3 uint8, the job's canvas as RGB
    fill: np.ndarray  # HxW bool
    guidance: float
    notes: dict[str, Any]
    crops: list[Crop] = field(default_factory=list)  # empty: the whole canvas fits

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        return pad_to_multiple(self.rgb, self.fill)


class FluxEngine(Engine):
    """FLUX.1 Fill [dev] on this machine. One pipeline per worker process; jobs take turns on it."""

    name: ClassVar[str] = "flux"
    uses_prompt: ClassVar[bool] = True
    settings_part: ClassVar[str] = "flux"

    def __init__(self, settings: FluxSettings) -> None:
        super().__init__(settings)
        self.settings: FluxSettings = settings
        self.pipe: FluxFillPipeline | None = None
        self.device = "cpu"
        self.dtype_name = ""
        self.fp8 = False
        self.offload = "none"
        self.warmed: list[tuple[int, int]] = []
        # The pipeline keeps per-call state (scheduler timesteps, guidance): one call at a time.
        self._lock = threading.Lock()

    def load(self) -> None:
        """Check the weights folder, load the pipeline and apply the speed settings."""
        s = self.settings
        problem = weights_problem(s.flux_model, s.flux_transformer_file)
        if problem is not None:
            raise RuntimeError(problem)
        assert s.flux_model is not None  # weights_problem refused None
        device = resolve_device(s.flux_device, s.flux_worker_index)
        dtype = resolve_dtype(s.flux_dtype, device)
        quantization = fp8_config(dtype, device) if s.flux_fp8 else None
        pipe = load_pipeline(s.flux_model, s.flux_transformer_file, dtype, quantization)
        self.fp8 = quantization is not None
        self.attach(pipe, device)
        for size in s.flux_warmup_sizes:
            self.warm_up(*parse_size(size))

    def attach(self, pipe: FluxFillPipeline, device: str) -> None:
        """Place `pipe` on `device` with the configured offload, caching, tiling and compile.

        Used by `load` and by bench/gpu.py, which builds pipelines with random weights.
        """
        s = self.settings
        offload = "model" if s.flux_cpu_offload and s.flux_offload == "none" else s.flux_offload
        if offload != "none" and not device.startswith("cuda"):
            raise RuntimeError(f"FILLFRAME_FLUX_OFFLOAD={offload} needs a CUDA GPU; unset it on CPU.")
        place_pipeline(pipe, device, offload)
        if s.flux_cache_threshold > 0:
            from diffusers import FirstBlockCacheConfig

            pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=s.flux_cache_threshold))
        if s.flux_vae_tiling:
            pipe.vae.enable_tiling()
        if s.flux_compile:
            # In place (nn.Module.compile), so the pipeline keeps its component type; the
            # first job at each new canvas size pays the compilation (FLUX_WARMUP_SIZES).
            pipe.transformer.compile()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.device = device
        self.offload = offload
        self.dtype_name = str(pipe.transformer.dtype).removeprefix("torch.")

    def warm_up(self, width: int, height: int) -> None:
        """One short call at `width`x`height`, so compile (and kernel choice) is paid at load."""
        rgb = np.zeros((height, width, 3), np.uint8)
        fill = np.ones((height, width), bool)
        call = Call("", rgb, fill, 0, lambda _p: None, lambda: False)
        with self._lock:
            self._run([call], steps=2, guidance=30.0)
        self.warmed.append((width, height))

    def runtime_notes(self, batch: int) -> dict[str, Any]:
        """Which speed and memory options this job ran with."""
        s = self.settings
        return {
            "fp8": self.fp8,
            "compile": s.flux_compile,
            "offload": self.offload,
            "cacheThreshold": s.flux_cache_threshold or None,
            "vaeTiling": s.flux_vae_tiling,
            "batch": batch,
        }

    def plan(self, job: FillJob) -> Plan:
        """Notes, guidance and the crops of one job (none when the padded canvas fits)."""
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
        truncated = clip_truncation(self.pipe, job.prompt)
        if truncated:
            notes["promptTruncated"] = truncated
        plan = Plan(job, rgb, fill, guidance, notes)
        height, width = fill.shape
        s = self.settings
        if fill.any() and not fits(width, height, s.flux_max_pixels):
            plan.crops = plan_crops(fill, s.flux_max_pixels, s.crop_context, s.crop_min_context)
            notes["maxPixels"] = s.flux_max_pixels
            notes["crops"] = [crop.note() for crop in plan.crops]
        return plan

    def fill(self, job: FillJob, progress: ProgressFn, cancelled: CancelledFn) -> FillOutput:
        """rgb: HxWx3 uint8 RGB canvas; mask: HxW uint8, 255 = fill. Returns the same size."""
        plan = self.plan(job)
        if not plan.fill.any():
            plan.notes["skipped"] = "the mask selects no pixels"
            return FillOutput(plan.rgb.copy(), plan.notes)
        if cancelled():
            raise Cancelled()
        plan.notes["runtime"] = self.runtime_notes(1)
        if plan.crops:
            return FillOutput(self._fill_crops(plan, progress, cancelled), plan.notes)
        rgb_p, fill_p = plan.padded()
        if rgb_p.shape != plan.rgb.shape:
            plan.notes["paddedTo"] = [int(rgb_p.shape[0]), int(rgb_p.shape[1])]
        call = Call(job.prompt, rgb_p, fill_p, job.seed, progress, cancelled)
        with self._lock:
            (generated,) = self._run([call], job.steps, plan.guidance)
        return FillOutput(self._finish(plan, generated), plan.notes)

    def _finish(self, plan: Plan, generated: np.ndarray | None) -> np.ndarray:
        if generated is None:
            raise Cancelled()
        height, width = plan.fill.shape
        return np.ascontiguousarray(composite(plan.rgb, generated[:height, :width], plan.fill))

    def _fill_crops(self, plan: Plan, progress: ProgressFn, cancelled: CancelledFn) -> np.ndarray:
        """Fill each crop at its work size and paste it back; unmasked pixels are never written."""
        out = plan.rgb.copy()
        job = plan.job
        for index, crop in enumerate(plan.crops):
            rgb_c, fill_c = crop_inputs(plan.rgb, plan.fill, crop)
            # Each crop its own noise, still fixed by the job's seed.
            seed = (job.seed + index) % 2**64
            part = slice_progress(progress, index, len(plan.crops))
            with self._lock:
                (generated,) = self._run(
                    [Call(job.prompt, rgb_c, fill_c, seed, part, cancelled)], job.steps, plan.guidance
                )
            if generated is None:
                raise Cancelled()
            paste(out, plan.fill, crop, generated)
        return out

    def max_batch(self) -> int:
        """FILLFRAME_FLUX_MAX_BATCH: the worker hands this many jobs of one canvas size, steps and
        guidance to one `fill_batch`, one pipeline call."""
        return self.settings.flux_max_batch

    def fill_batch(
        self,
        jobs: list[FillJob],
        progress: list[ProgressFn],
        cancelled: list[CancelledFn],
    ) -> list[FillOutput | BaseException]:
        """Fill several jobs, those of one canvas size (and steps and guidance) in shared pipeline
        calls of at most FILLFRAME_FLUX_MAX_BATCH images; the rest one by one.

        Each job keeps its own seed (its own generator), progress and cancel: a cancelled job in
        a batch gets `Cancelled` while the others run on. Returns, in order, each job's output or
        the exception it ended with.
        """
        results: list[FillOutput | BaseException | None] = [None] * len(jobs)
        groups: dict[tuple[Any, ...], list[tuple[int, Plan]]] = {}
        for index, job in enumerate(jobs):
            try:
                plan = self.plan(job)
            except Exception as exc:  # one job's bad input must not fail its neighbours
                results[index] = exc
                continue
            if plan.crops or not plan.fill.any():
                results[index] = fill_one(self, job, progress[index], cancelled[index])
                continue
            key = (plan.padded()[0].shape, job.steps, plan.guidance)
            groups.setdefault(key, []).append((index, plan))
        size = self.settings.flux_max_batch
        for members in groups.values():
            for start in range(0, len(members), size):
                self._batch(members[start : start + size], progress, cancelled, results)
        return [r if r is not None else EngineFailed("The job was not run.") for r in results]

    def _batch(
        self,
        members: list[tuple[int, Plan]],
        progress: list[ProgressFn],
        cancelled: list[CancelledFn],
        results: list[FillOutput | BaseException | None],
    ) -> None:
        calls = []
        for index, plan in members:
            rgb_p, fill_p = plan.padded()
            plan.notes["runtime"] = self.runtime_notes(len(members))
            if rgb_p.shape != plan.rgb.shape:
                plan.notes["paddedTo"] = [int(rgb_p.shape[0]), int(rgb_p.shape[1])]
            calls.append(
                Call(plan.job.prompt, rgb_p, fill_p, plan.job.seed, progress[index], cancelled[index])
            )
        first = members[0][1]
        try:
            with self._lock:
                generated = self._run(calls, first.job.steps, first.guidance)
        except Exception as exc:
            for index, _ in members:
                results[index] = exc
            return
        for (index, plan), image in zip(members, generated, strict=True):
            try:
                results[index] = FillOutput(self._finish(plan, image), plan.notes)
            except Cancelled as exc:
                results[index] = exc

    def _run(self, calls: list[Call], steps: int, guidance: float) -> list[np.ndarray | None]:
        """One pipeline call over `calls` (one canvas size); None for a call cancelled meanwhile.

        Raises Cancelled when every call is cancelled (the pipeline stops at once).
        """
        from PIL import Image

        torch = _import_torch()
        pipe = self.pipe
        assert pipe is not None
        stopped = [call.cancelled() for call in calls]
        if all(stopped):
            raise Cancelled()

        def on_step_end(_pipe: Any, step: int, _timestep: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            for i, call in enumerate(calls):
                if not stopped[i]:
                    call.progress((step + 1) * 100 // (steps + 1))  # the last share is the VAE decode
                    stopped[i] = call.cancelled()
            if all(stopped):
                raise Cancelled()  # propagates out of the pipeline call at once
            return {}

        # CPU generators give the same noise for a seed on any device, and one per image keeps
        # each job's noise what it would be alone.
        generators = [torch.Generator(device="cpu").manual_seed(call.seed % 2**64) for call in calls]
        height, width = calls[0].fill.shape
        out_of_memory = False
        caching = self.settings.flux_cache_threshold > 0
        try:
            with torch.inference_mode(), pipe.transformer.cache_context("cond") if caching else nullcontext():
                result = pipe(
                    prompt=[call.prompt for call in calls],
                    image=[Image.fromarray(call.rgb, "RGB") for call in calls],
                    mask_image=[Image.fromarray(call.fill.astype(np.uint8) * 255, "L") for call in calls],
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=generators,
                    output_type="np",
                    callback_on_step_end=on_step_end,
                )
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # handled below, once this frame's tensors are released
        except BaseException:
            # A cancel (or any failure) leaves the call before the pipeline's own
            # maybe_free_model_hooks(): without it, offload leaves the transformer on the GPU
            # and the next job loads T5 on top. It also resets the first-block cache.
            pipe.maybe_free_model_hooks()
            raise
        if out_of_memory:
            pipe.maybe_free_model_hooks()
            gc.collect()  # the failed call's activations, held by its traceback until now
            torch.cuda.empty_cache()
            hint = "try a smaller image"
            if self.offload == "none":
                hint += " or set FILLFRAME_FLUX_OFFLOAD=model (or group)"
            elif self.settings.flux_max_pixels > 1024 * 1024:
                hint += " or lower FILLFRAME_FLUX_MAX_PIXELS"
            raise EngineFailed(
                f"The GPU ran out of memory on {len(calls)} {width}x{height} canvas(es); {hint}."
            )
        images = to_uint8(result.images)
        return [None if stopped[i] else image for i, image in enumerate(images)]


def place_pipeline(pipe: FluxFillPipeline, device: str, offload: str) -> None:
    """Put the pipeline on `device`, whole or through one of diffusers' offload schemes."""
    if offload == "model":
        # Whole models move to the GPU in turn (text encoders, transformer, VAE): same results,
        # less GPU memory (the transformer's ~24 GB in bf16), some seconds more per image.
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        # Layer by layer: the least GPU memory, many times slower.
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        # Leaf modules streamed to the GPU ahead of use: near model-offload speed, far less memory.
        from diffusers.hooks import apply_group_offloading

        for component in (pipe.transformer, pipe.text_encoder_2, pipe.text_encoder, pipe.vae):
            apply_group_offloading(
                component,
                onload_device=device,
                offload_device="cpu",
                offload_type="leaf_level",
                use_stream=True,
            )
    else:
        pipe.to(device)


def clip_truncation(pipe: FluxFillPipeline, prompt: str) -> str | None:
    """A note when CLIP (77 tokens) sees only part of the prompt; T5 reads up to 512."""
    tokenizer = pipe.tokenizer
    limit = int(getattr(tokenizer, "model_max_length", 77))
    count = len(tokenizer(prompt, truncation=False)["input_ids"])
    if count <= limit:
        return None
    return f"CLIP read the first {limit} of {count} tokens; T5 read up to 512 (the whole prompt below that)"
