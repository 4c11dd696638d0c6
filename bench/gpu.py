"""Seconds per image, images per hour and peak GPU memory of the flux engine, per speed setting.

    python bench/gpu.py                      # full-size FLUX.1 Fill [dev] architecture, random weights
    python bench/gpu.py --model /models/FLUX.1-Fill-dev   # the real weights, through engine.load()
    python bench/gpu.py --tiny               # tiny config on CPU: runs the code path, no GPU needed

Rows, each adding to the one before (the issue's ladder), all through `FluxEngine.fill` (or
`fill_batch`), the call a worker makes, on a 1024x1024 photo with a centred hole of a quarter of
its area, at 50 and 28 steps (text encoders, transformer, VAE decode and compositing included):
bf16; + compile; + FP8 (torchao); + first-block caching; + batch of 4 (seconds per image = the
call's time / 4). Beside them, the memory options for smaller cards: model offload and group
offload, on bf16. Then a 24 MP photo (6000x4000) with a 5% hole, filled with the crop (the model
sees at most FILLFRAME_FLUX_MAX_PIXELS, 1 MP) and without it (the whole canvas, VAE tiling on).

Each figure: median of `--runs` after one warm-up (which pays any compilation), the ratio to the
bf16 row of the same run, images per hour per GPU (3600 / s per image), and peak GPU memory as
the card sees it: torch's peak *reserved* memory plus what was in use before anything was
loaded (the CUDA context, and any other process). FP8 and caching change the numbers computed,
so with the real weights (--model) the hole's PSNR against the bf16 row is printed; with random
weights no quality figure is printed at all, since noise-like pixels say nothing of quality.

Without weights (none can be downloaded here) the pipeline is built from FLUX.1-Fill-dev's
published configs (19 double and 38 single blocks, 24 heads of 128, joint dim 4096, pooled dim
768, 384 in / 64 out channels, rope axes 16/56/56; T5-XXL and CLIP-L encoders; the 16-channel
VAE) with random weights, on the CPU in bfloat16, then placed by the engine as the setting says:
so the offload rows keep the model in CPU memory as on a 16-24 GB card, and FP8 quantizes on the
CPU before anything reaches the GPU, as `engine.load()` does through TorchAoConfig. Timings and
memory are those of the real model (same shapes and kernels). Results also go to bench/out/gpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers/transformers are imported
ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is first on the path and bench/queue.py would shadow the standard
# library's queue (torch imports it): look modules up from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import numpy as np

from fillframe.engines.base import FillJob
from fillframe.engines.flux import FluxEngine, fp8_quant_type
from fillframe.settings import FluxSettings

CACHE_THRESHOLD = 0.08
LADDER: dict[str, dict[str, Any]] = {
    "bf16": {},
    "+compile": {"flux_compile": True},
    "+fp8": {"flux_compile": True, "flux_fp8": True},
    "+cache": {"flux_compile": True, "flux_fp8": True, "flux_cache_threshold": CACHE_THRESHOLD},
    "+batch4": {"flux_compile": True, "flux_fp8": True, "flux_cache_threshold": CACHE_THRESHOLD,
                "flux_max_batch": 4},
    "offload-model": {"flux_offload": "model"},
    "offload-group": {"flux_offload": "group"},
}  # fmt: skip
# Flags the CPU run leaves out (compile pays minutes of C++ builds there; FP8 and offload need CUDA).
CUDA_FLAGS = {"flux_compile", "flux_fp8", "flux_offload"}
BATCH = 4
# Rows whose own addition needs CUDA; later rows on the CPU run without those flags (and say so).
CUDA_ROWS = {"+compile", "+fp8", "offload-model", "offload-group"}

# FLUX.1-Fill-dev's published component configs (black-forest-labs/FLUX.1-Fill-dev).
FULL_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 384,
    "out_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
FULL_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
}
FULL_CLIP: dict[str, Any] = {  # openai/clip-vit-large-patch14, text tower
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 0,
    "eos_token_id": 2,  # as in FLUX's text_encoder/config.json
    "pad_token_id": 1,
}
FULL_T5: dict[str, Any] = {  # google/t5-v1_1-xxl, encoder only
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "is_encoder_decoder": False,
    "use_cache": False,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}


@dataclass
class Row:
    setting: str
    steps: int
    canvas: str
    seconds: float | None = None
    ratio: float | None = None
    images_per_hour: float | None = None
    peak_gib: float | None = None
    psnr_db: float | None = None
    warmup_seconds: float | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 arrays; inf when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def square_canvas(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A real photo at size x size (HxWx3 uint8) and a centred hole of a quarter of its area."""
    from tests.utils.images import box_mask, photo

    return photo("astronaut", (size, size)), box_mask(size, size, 0.25)


def large_canvas(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A real photo at width x height with an off-centre hole of 5% of its area."""
    from tests.utils.images import photo

    rgb = photo("coffee", (width, height))
    mask = np.zeros((height, width), np.uint8)
    w, h = int(width * 0.05**0.5), int(height * 0.05**0.5)
    x, y = width // 3 - w // 2, height // 2 - h // 2
    mask[y : y + h, x : x + w] = 255
    return rgb, mask


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Create modules in `dtype` on the CPU (no fp32 copy of 12B weights)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cpu"):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_random(tiny: bool, dtype: Any, scratch: Path) -> Any:
    from tests.utils import tiny_flux

    if tiny:
        configs = (tiny_flux.TINY_TRANSFORMER, tiny_flux.TINY_VAE, tiny_flux.TINY_CLIP, tiny_flux.TINY_T5)
    else:
        configs = (FULL_TRANSFORMER, FULL_VAE, FULL_CLIP, FULL_T5)
    with default_dtype(dtype):
        return tiny_flux.build_pipeline(scratch, *configs, seed=0)


def flags_for(name: str, device: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    flags = {**LADDER[name], **(extra or {})}
    if not device.startswith("cuda"):
        flags = {k: v for k, v in flags.items() if k not in CUDA_FLAGS}
    return flags


def make_engine(args: argparse.Namespace, flags: dict[str, Any], device: str, scratch: Path) -> FluxEngine:
    """An engine with these settings, loaded from --model or attached to random CPU-built weights."""
    import torch

    dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    settings = FluxSettings(flux_model=args.model, flux_device=device, flux_dtype=dtype_name, **flags)
    engine = FluxEngine(settings)
    if args.model is not None:
        engine.load()
        return engine
    dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
    pipe = build_random(args.tiny, dtype, scratch)
    if flags.get("flux_fp8"):
        from torchao.quantization import quantize_

        quantize_(pipe.transformer, fp8_quant_type())  # on the CPU, as TorchAoConfig does at load
        engine.fp8 = True
    engine.attach(pipe, device)
    return engine


def release(engine: FluxEngine | None) -> None:
    import torch

    if engine is not None:
        engine.pipe = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # forget compiled graphs of the previous setting


def peak_gib(context_bytes: int) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return (torch.cuda.max_memory_reserved() + context_bytes) / 2**30


def timed(fn: Any, runs: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def bench_row(
    args: argparse.Namespace,
    name: str,
    device: str,
    scratch: Path,
    baseline: dict[tuple[str, int], np.ndarray],
    context_bytes: int,
    *,
    canvas: tuple[np.ndarray, np.ndarray],
    steps_list: list[int],
    label: str,
    extra: dict[str, Any] | None = None,
) -> list[Row]:
    """One setting at each step count: median seconds per image, peak memory, PSNR (real weights)."""
    import torch

    rgb, mask = canvas
    hole = mask == 255
    cuda = device.startswith("cuda")
    flags = flags_for(name, device, extra)
    batch = BATCH if flags.get("flux_max_batch", 1) > 1 else 1
    engine = None
    rows = []
    try:
        engine = make_engine(args, flags, device, scratch)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()  # the weights stay counted: they are still reserved

        def run(steps: int) -> np.ndarray:
            jobs = [
                FillJob(rgb=rgb, mask=mask, prompt=args.prompt, seed=args.seed + i, steps=steps)
                for i in range(batch)
            ]
            if batch == 1:
                return engine.fill(jobs[0], lambda _p: None, lambda: False).rgb
            outs = engine.fill_batch(jobs, [lambda _p: None] * batch, [lambda: False] * batch)
            first = outs[0]
            if isinstance(first, BaseException):
                raise first
            return first.rgb

        start = time.perf_counter()
        run(2)
        warmup = time.perf_counter() - start
        for steps in steps_list:
            times, out = timed(lambda steps=steps: run(steps), args.runs)
            seconds = statistics.median(times) / batch
            row = Row(name, steps, label, seconds=seconds, warmup_seconds=warmup, runs=times,
                      images_per_hour=3600.0 / seconds, peak_gib=peak_gib(context_bytes))  # fmt: skip
            if set(flags) & CUDA_FLAGS != set(LADDER[name]) & CUDA_FLAGS:
                row.note = "without " + ", ".join(sorted((set(LADDER[name]) & CUDA_FLAGS) - set(flags)))
            if args.model is not None:  # real weights: a quality figure means something
                key = (label, steps)
                if name in ("bf16", "crop") and key not in baseline:
                    baseline[key] = out[hole]
                elif key in baseline:
                    row.psnr_db = psnr(out[hole], baseline[key])
            rows.append(row)
            print(f"  {label} {name} {steps} steps: {seconds:.2f} s/image", flush=True)
    except (RuntimeError, ImportError) as exc:
        # A setting this machine cannot run (no torchao, no FP8 GPU) is reported, not fatal.
        rows = [Row(name, steps, label, note=f"skipped: {exc}") for steps in steps_list]
    finally:
        release(engine)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (checks the code path)")
    parser.add_argument("--model", type=Path, default=None, help="real FLUX.1-Fill-dev folder")
    parser.add_argument("--settings", nargs="+", choices=list(LADDER), default=None)
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 28])
    parser.add_argument("--size", type=int, default=None, help="canvas side (default 1024, tiny 64)")
    parser.add_argument(
        "--large", default=None, help="the crop rows' canvas, WxH (default 6000x4000, tiny 768x512)"
    )
    parser.add_argument("--crop-steps", type=int, default=28, help="steps of the crop rows")
    parser.add_argument("--no-crop-rows", action="store_true", help="skip the 24 MP with/without crop rows")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per step count")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--prompt", default="a bouquet of red flowers")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu.json")
    args = parser.parse_args(argv)
    args.size = args.size or (64 if args.tiny else 1024)
    width, _, height = (args.large or ("768x512" if args.tiny else "6000x4000")).partition("x")
    args.large = (int(width), int(height))
    # The tiny model's stand-in for 1 MP: the crop rows keep the same ratio of canvas to budget.
    args.crop_pixels = 128 * 128 if args.tiny else 1024 * 1024
    if args.settings is None:
        args.settings = list(LADDER)
    if "bf16" not in args.settings:
        args.settings.insert(0, "bf16")  # the baseline every ratio is measured against
    return args


def print_table(rows: list[Row], device: str, args: argparse.Namespace, context_bytes: int) -> None:
    base = {(r.canvas, r.steps): r.seconds for r in rows if r.setting in ("bf16", "no-crop") and r.seconds}
    for r in rows:
        if r.seconds and base.get((r.canvas, r.steps)):
            r.ratio = r.seconds / base[(r.canvas, r.steps)]
    weights = args.model or "random weights (no quality figures)"
    print(f"\nflux engine, device {device}, {weights}, runs {args.runs}, seed {args.seed}")
    if device == "cpu":
        print(
            "(on the CPU 'bf16' runs in float32, as the engine does there; "
            "compile, FP8 and offload are left out)"
        )
    else:
        print(
            f"(peak = torch's peak reserved memory + {context_bytes / 2**30:.2f} GiB in use before loading)"
        )
    print(
        f"{'canvas':<10} {'setting':<14} {'steps':>5} {'s/image':>8} {'ratio':>6} {'img/h':>7} "
        f"{'peak GiB':>9} {'PSNR':>6}  note"
    )
    for r in rows:
        sec = f"{r.seconds:8.2f}" if r.seconds else f"{'-':>8}"
        ratio = f"{r.ratio:6.2f}" if r.ratio else f"{'-':>6}"
        per_hour = f"{r.images_per_hour:7.0f}" if r.images_per_hour else f"{'-':>7}"
        peak = f"{r.peak_gib:9.1f}" if r.peak_gib is not None else f"{'-':>9}"
        quality = f"{r.psnr_db:6.1f}" if r.psnr_db is not None else f"{'-':>6}"
        note = r.note
        if r.warmup_seconds is not None:
            note = f"{note}; warm-up {r.warmup_seconds:.1f} s".lstrip("; ")
        print(
            f"{r.canvas:<10} {r.setting:<14} {r.steps:>5} {sec} {ratio} {per_hour} {peak} {quality}  {note}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench/gpu.py needs torch and diffusers: pip install 'fillframe[flux]'.", file=sys.stderr)
        return 2
    if not args.tiny and not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA GPU (torch sees none); use --tiny to run the code path on CPU.")
        return 2
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    context_bytes = 0
    if device == "cuda":
        torch.cuda.init()
        torch.zeros(1, device=device)  # create the context, then see what the card has in use
        free, total = torch.cuda.mem_get_info()
        context_bytes = total - free
    else:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows: list[Row] = []
    baseline: dict[tuple[str, int], np.ndarray] = {}
    square = square_canvas(args.size)
    label = f"{args.size}x{args.size}"
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.settings:
            if not device.startswith("cuda") and name in CUDA_ROWS:
                # On the CPU these rows would rerun bf16 under another name: left out.
                rows += [Row(name, s, label, note="skipped: needs a CUDA GPU") for s in args.steps]
                continue
            rows += bench_row(args, name, device, Path(scratch), baseline, context_bytes,
                              canvas=square, steps_list=args.steps, label=label)  # fmt: skip
        if not args.no_crop_rows:
            width, height = args.large
            large = large_canvas(width, height)
            big = f"{width}x{height}"
            # Tiling keeps a 24 MP decode within a card's memory; the tiny VAE needs none.
            LADDER["no-crop"] = {"flux_max_pixels": width * height * 2, "flux_vae_tiling": not args.tiny}
            LADDER["crop"] = {"flux_max_pixels": args.crop_pixels}
            for name in ("no-crop", "crop"):
                rows += bench_row(args, name, device, Path(scratch), baseline, context_bytes,
                                  canvas=large, steps_list=[args.crop_steps], label=big)  # fmt: skip
    print_table(rows, device, args, context_bytes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    report = {"device": device, "gpu": gpu, "size": args.size, "weights": str(args.model or "random"),
              "torch": torch.__version__, "context_bytes": context_bytes,
              "rows": [asdict(r) for r in rows]}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
