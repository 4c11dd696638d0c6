"""Seconds per image and peak GPU memory of the flux engine, per speed setting, with a quality check.

    python bench/gpu.py                      # full-size FLUX.1 Fill [dev] architecture, random weights
    python bench/gpu.py --model /models/FLUX.1-Fill-dev   # the real weights, through engine.load()
    python bench/gpu.py --tiny               # tiny config on CPU: runs the code path, no GPU needed

For each setting (bf16 baseline, CPU offload, torch.compile, FP8 through torchao, FP8 + compile)
it fills a 1024x1024 canvas (a photo, a centred hole of a quarter of its area) through
`FluxEngine.fill`, the same call a worker makes, at 50 and 28 steps: text encoders, transformer,
VAE decode and compositing included. It prints seconds per image (median of `--runs` after one
warm-up that also pays any compilation), the ratio to the bf16 baseline measured in the same run,
peak GPU memory (torch.cuda.max_memory_allocated), and the PSNR of the hole's pixels against the
bf16 output at the same seed and steps. CPU offload should be identical (PSNR inf); compile close;
FP8 is lossy by design.

Without weights (none can be downloaded here) the pipeline is built from FLUX.1-Fill-dev's
published configs (19 double and 38 single blocks, 24 heads of 128, joint dim 4096, pooled dim
768, 384 in / 64 out channels, rope axes 16/56/56; T5-XXL and CLIP-L encoders; the 16-channel
VAE) with random weights, directly on the GPU in bfloat16. Timings and memory are those of the
real model (same shapes and kernels); pixels are noise-like, so PSNR there measures how much a
setting changes the computation, not picture quality. Results also go to bench/out/gpu.json.
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
sys.path.insert(0, str(ROOT))

import numpy as np

from fillframe.engines.base import FillJob
from fillframe.engines.flux import FluxEngine
from fillframe.settings import Settings

SETTINGS: dict[str, dict[str, bool]] = {
    "bf16": {},
    "cpu_offload": {"flux_cpu_offload": True},
    "compile": {"flux_compile": True},
    "fp8": {"flux_fp8": True},
    "fp8+compile": {"flux_fp8": True, "flux_compile": True},
}
CUDA_ONLY = {"cpu_offload", "fp8", "fp8+compile"}

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
    seconds: float | None = None
    ratio: float | None = None
    peak_gib: float | None = None
    psnr_db: float | None = None
    warmup_seconds: float | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 arrays; inf when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def canvas(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A real photo at size x size (HxWx3 uint8) and a centred hole of a quarter of its area."""
    from tests.utils.images import box_mask, photo

    return photo("astronaut", (size, size)), box_mask(size, size, 0.25)


@contextlib.contextmanager
def default_device_and_dtype(device: str, dtype: Any) -> Iterator[None]:
    """Create modules directly where and how they will run (no fp32 CPU copy of 12B weights)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_random(tiny: bool, device: str, dtype: Any, scratch: Path) -> Any:
    from tests.utils import tiny_flux

    if tiny:
        configs = (tiny_flux.TINY_TRANSFORMER, tiny_flux.TINY_VAE, tiny_flux.TINY_CLIP, tiny_flux.TINY_T5)
    else:
        configs = (FULL_TRANSFORMER, FULL_VAE, FULL_CLIP, FULL_T5)
    with default_device_and_dtype(device, dtype):
        return tiny_flux.build_pipeline(scratch, *configs, seed=0)


def make_engine(args: argparse.Namespace, name: str, device: str, scratch: Path) -> FluxEngine:
    """An engine with the setting's flags, loaded from --model or attached to random weights."""
    import torch

    flags = SETTINGS[name]
    dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    settings = Settings(flux_model=args.model, flux_device=device, flux_dtype=dtype_name, **flags)
    engine = FluxEngine(settings)
    if args.model is not None:
        engine.load()
    else:
        dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
        engine.attach(build_random(args.tiny, device, dtype, scratch), device)
    return engine


def release(engine: FluxEngine | None) -> None:
    import torch

    if engine is not None:
        engine.pipe = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # forget compiled graphs of the previous setting


def bench_setting(
    args: argparse.Namespace, name: str, device: str, scratch: Path, baseline: dict[int, np.ndarray]
) -> list[Row]:
    import torch

    rgb, mask = canvas(args.size)
    hole = mask == 255
    cuda = device.startswith("cuda")
    engine = None
    rows = []
    try:
        engine = make_engine(args, name, device, scratch)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        warm = FillJob(rgb=rgb, mask=mask, prompt=args.prompt, seed=args.seed, steps=2)
        engine.fill(warm, lambda _p: None, lambda: False)
        warmup = time.perf_counter() - start
        for steps in args.steps:
            job = FillJob(rgb=rgb, mask=mask, prompt=args.prompt, seed=args.seed, steps=steps)
            times, out = [], None
            for _ in range(args.runs):
                start = time.perf_counter()
                out = engine.fill(job, lambda _p: None, lambda: False).rgb
                times.append(time.perf_counter() - start)
            assert out is not None
            row = Row(name, steps, seconds=statistics.median(times), warmup_seconds=warmup, runs=times)
            if cuda:
                row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
            if name == "bf16":
                baseline[steps] = out[hole]
            elif steps in baseline:
                row.psnr_db = psnr(out[hole], baseline[steps])
            rows.append(row)
    except (RuntimeError, ImportError) as exc:
        # A setting this machine cannot run (no torchao, no FP8 GPU) is reported, not fatal.
        rows = [Row(name, steps, note=f"skipped: {exc}") for steps in args.steps]
    finally:
        release(engine)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (checks the code path)")
    parser.add_argument("--model", type=Path, default=None, help="real FLUX.1-Fill-dev folder")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None)
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 28])
    parser.add_argument("--size", type=int, default=None, help="canvas side (default 1024, tiny 64)")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per step count")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--prompt", default="a bouquet of red flowers")
    parser.add_argument("--min-psnr", type=float, default=30.0, help="dB below which a setting is flagged")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu.json")
    args = parser.parse_args(argv)
    args.size = args.size or (64 if args.tiny else 1024)
    if args.settings is None:
        args.settings = ["bf16"] if args.tiny else list(SETTINGS)
    if "bf16" not in args.settings:
        args.settings.insert(0, "bf16")  # the baseline every ratio and PSNR is measured against
    return args


def print_table(rows: list[Row], device: str, args: argparse.Namespace) -> None:
    base = {r.steps: r.seconds for r in rows if r.setting == "bf16" and r.seconds}
    for r in rows:
        if r.seconds and base.get(r.steps):
            r.ratio = r.seconds / base[r.steps]
    print(f"\nflux engine, {args.size}x{args.size}, device {device}, runs {args.runs}, seed {args.seed}")
    if device == "cpu":
        print("(on the CPU the 'bf16' baseline runs in float32, as the engine does there)")
    print(f"{'setting':<12} {'steps':>5} {'s/image':>8} {'x bf16':>7} {'peak GiB':>9} {'PSNR dB':>8}  note")
    for r in rows:
        sec = f"{r.seconds:8.2f}" if r.seconds else f"{'-':>8}"
        ratio = f"{r.ratio:7.2f}" if r.ratio else f"{'-':>7}"
        peak = f"{r.peak_gib:9.1f}" if r.peak_gib is not None else f"{'-':>9}"
        quality = f"{r.psnr_db:8.1f}" if r.psnr_db is not None else f"{'-':>8}"
        note = r.note
        if r.psnr_db is not None:
            note = note or (
                "close to bf16" if r.psnr_db >= args.min_psnr else f"DIFFERS (< {args.min_psnr:g} dB)"
            )
        if r.warmup_seconds is not None and r.steps == args.steps[0]:
            note = f"{note}; warm-up {r.warmup_seconds:.1f} s".lstrip("; ")
        print(f"{r.setting:<12} {r.steps:>5} {sec} {ratio} {peak} {quality}  {note}")


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
    if device == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows: list[Row] = []
    baseline: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.settings:
            if name in CUDA_ONLY and device == "cpu":
                rows += [Row(name, s, note="skipped: needs a CUDA GPU") for s in args.steps]
                continue
            rows += bench_setting(args, name, device, Path(scratch), baseline)
    print_table(rows, device, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    report = {"device": device, "gpu": gpu, "size": args.size, "weights": str(args.model or "random"),
              "torch": torch.__version__, "rows": [asdict(r) for r in rows]}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
