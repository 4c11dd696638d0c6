"""A tiny FLUX.1 Fill pipeline built from configs, with random weights and local tokenizers.

It has the real architecture's wiring, scaled down: a transformer taking 384 input channels
(64 packed latents + 64 packed masked-image latents + 256 packed mask) and giving 64, a VAE with
16 latent channels and a scale factor of 8 (four blocks), CLIP and T5 text encoders and their
tokenizers. Nothing is downloaded: the tokenizers are written from small vocabularies here.

Set `HF_HUB_OFFLINE=1` before importing this module (the tests and bench/gpu.py do), so that
any code path that would reach for the hub fails instead of downloading.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxFillPipeline,
    FluxTransformer2DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

# FLUX.1-Fill-dev's packed channels: 16 latent channels x 2x2 patch = 64 per stream.
FILL_IN_CHANNELS = 384
PLAIN_IN_CHANNELS = 64

TINY_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": FILL_IN_CHANNELS,
    "out_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,  # = T5 d_model
    "pooled_projection_dim": 32,  # = CLIP hidden size
    "guidance_embeds": True,  # as FLUX.1 [dev]: guidance is an input, not CFG
    "axes_dims_rope": (4, 4, 8),  # sums to attention_head_dim
}

TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,  # 4 blocks: scale factor 8, as FLUX's
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 16, 16, 16),
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 8,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}

TINY_CLIP: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "projection_dim": 32,
    "vocab_size": 128,  # the tokenizer below uses ids < 100
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}

TINY_T5: dict[str, Any] = {
    "d_model": 32,
    "d_ff": 37,
    "d_kv": 8,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "vocab_size": 64,  # the tokenizer below uses ids < 50
    "is_encoder_decoder": False,
    "use_cache": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}

SCHEDULER: dict[str, Any] = {  # FLUX.1's published scheduler config
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "and",
    "with",
    "in",
    "on",
    "sky",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "tree",
    "sea",
    "sun",
    "house",
    "garden",
]


def write_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A character-level BPE vocabulary with a few merges, in CLIP's vocab.json/merges.txt form."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + ".,!?'-":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    merges = ["t h", "th e</w>", "a n", "an d</w>", "o f</w>"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    assert len(vocab) <= TINY_CLIP["vocab_size"]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def write_t5_tokenizer(folder: Path) -> T5TokenizerFast:
    """A unigram vocabulary (letters plus a few words) as a tokenizers JSON, as T5's fast form."""
    folder.mkdir(parents=True, exist_ok=True)
    pieces = ["<pad>", "</s>", "<unk>", *string.ascii_lowercase, *("▁" + w for w in _WORDS)]
    assert len(pieces) <= TINY_T5["vocab_size"]
    tok = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.save(str(folder / "tokenizer.json"))
    config = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "extra_ids": 0}
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 512}))
    return T5TokenizerFast.from_pretrained(folder)


def build_pipeline(
    scratch: Path,
    transformer: dict[str, Any],
    vae: dict[str, Any],
    clip: dict[str, Any],
    t5: dict[str, Any],
    seed: int = 0,
) -> FluxFillPipeline:
    """A FluxFillPipeline from configs with random weights drawn from `seed`.

    Modules are created on torch's current default device and dtype (bench/gpu.py sets them to
    build the full-size model on the GPU in bfloat16). `scratch` holds the written tokenizers;
    their vocabularies are small, but the pipeline pads prompts to the same lengths as FLUX's
    real tokenizers (77 for CLIP, 512 for T5), so the encoders do the same amount of work.
    """
    torch.manual_seed(seed)
    return FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=AutoencoderKL(**vae).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**clip)).eval(),
        tokenizer=write_clip_tokenizer(scratch / "clip-tokenizer"),
        text_encoder_2=T5EncoderModel(T5Config(**t5)).eval(),
        tokenizer_2=write_t5_tokenizer(scratch / "t5-tokenizer"),
        transformer=FluxTransformer2DModel(**transformer).eval(),
    )


def build_tiny_pipeline(
    scratch: Path, *, in_channels: int = FILL_IN_CHANNELS, seed: int = 0
) -> FluxFillPipeline:
    """The tiny float32 pipeline (random weights from `seed`); `scratch` holds tokenizers."""
    transformer = {**TINY_TRANSFORMER, "in_channels": in_channels}
    return build_pipeline(scratch, transformer, TINY_VAE, TINY_CLIP, TINY_T5, seed=seed)


def save_tiny_pipeline(folder: Path, *, in_channels: int = FILL_IN_CHANNELS, seed: int = 0) -> Path:
    """Save a tiny pipeline to `folder` in diffusers layout (as a FLUX.1-Fill-dev snapshot)."""
    scratch = folder.parent / f".{folder.name}-scratch"
    pipe = build_tiny_pipeline(scratch, in_channels=in_channels, seed=seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return folder


def save_plain_dev_copy(fill_folder: Path, folder: Path, *, seed: int = 0) -> Path:
    """A copy of `fill_folder` whose transformer takes 64 input channels, as plain FLUX.1-dev."""
    shutil.copytree(fill_folder, folder)
    shutil.rmtree(folder / "transformer")
    torch.manual_seed(seed)
    plain = FluxTransformer2DModel(**{**TINY_TRANSFORMER, "in_channels": PLAIN_IN_CHANNELS})
    plain.save_pretrained(folder / "transformer", safe_serialization=True)
    return folder


def save_single_transformer_file(fill_folder: Path, path: Path) -> Path:
    """The folder's transformer weights as one .safetensors file (diffusers key names)."""
    from safetensors.torch import save_file

    transformer = FluxTransformer2DModel.from_pretrained(fill_folder, subfolder="transformer")
    state = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    save_file(state, str(path))
    return path
