"""Pipelines with random weights, built from configs: no download, no weights on disk.

- `tiny`: every component with the real architecture at toy size; runs on a CPU in seconds. Images it
  makes are noise: it exists so that the engine, the app, training and evaluation run and are tested
  where no weights are.
- `drawn`: the tiny architectures for 16×16 or 32×32 pictures (a VAE that halves the size twice, so the UNet
  still works on 8×8 latents): the CPU-scale learning experiment (experiments/drawn_people/) trains
  them on drawn people, and the offline demo loads what it trained.
- `sd15`: Stable Diffusion 1.5's exact architectures (and CurricularFace IR-101) with random weights:
  it times and fills memory like the real model, for benchmarks on machines without the weights.

The CLIP tokenizer of both is a real byte-level BPE tokenizer whose vocabulary and merge files are
written here: whole-word tokens for the words prompts use most, single characters for the rest.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .defaults import DEFAULT_IDENTITY_ENCODER
from .identity.encoder import IdentityEncoder
from .prompts import EMOTION_WORDS, IDENTITY_WORDS
from .stea import STEA

TINY_WORDS = IDENTITY_WORDS + EMOTION_WORDS + (
    "a", "an", "the", "photo", "portrait", "of", "in", "on", "with", "and", "wearing", "snow", "beach",
    "city", "hat", "painting", "style", "smiling", "person", "face", "expression", "at", "night",
)  # fmt: skip
START, END = "<|startoftext|>", "<|endoftext|>"
# Stable Diffusion 1.5's noise schedule, so the Euler scheduler is derived from it as for real weights.
SD15_SCHEDULE = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    skip_prk_steps=True,
    set_alpha_to_one=False,
)


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: printable stand-ins for the 256 byte values."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for _, code in sorted(zip(printable, codes))]


def write_tiny_tokenizer(folder: str | Path, words: tuple[str, ...] = TINY_WORDS) -> Path:
    """Write vocab.json and merges.txt of a BPE tokenizer that knows `words` as single tokens."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab_list = symbols + [symbol + "</w>" for symbol in symbols]
    merges: list[str] = []
    # Longer words first: their merges then outrank the merges of words they contain ("woman", "man").
    for word in sorted(dict.fromkeys(words), key=len, reverse=True):  # left to right: "m a", "ma n</w>"
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
                vocab_list.append(pieces[0] + pieces[1])
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    vocab_list += [START, END]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def tiny_tokenizer(max_tokens: int = 77) -> CLIPTokenizer:
    """The tiny CLIP tokenizer, loaded through its files like a real one."""
    with tempfile.TemporaryDirectory() as folder:
        return CLIPTokenizer.from_pretrained(write_tiny_tokenizer(folder), model_max_length=max_tokens)


@dataclass(frozen=True)
class RandomPreset:
    text_encoder: dict
    unet: dict
    vae: dict
    identity_encoder: str
    max_tokens: int = 77  # the text encoder's context (SD 1.5: 77)
    word_scale: float = 1.0  # word embeddings × this at initialisation (see the `drawn` preset)


# The toy text encoder and UNet that the `tiny` and `drawn` presets share (they differ in VAE and φ).
TINY_TEXT_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_UNET = dict(
    sample_size=8,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=16,
)

PRESETS = {
    "tiny": RandomPreset(
        text_encoder=TINY_TEXT_ENCODER,
        unet=TINY_UNET,
        vae=dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64),
        identity_encoder="tiny",
    ),
    "drawn": RandomPreset(
        text_encoder=TINY_TEXT_ENCODER,
        unet=TINY_UNET,
        vae=dict(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=32),
        identity_encoder="drawn",
        # A pretrained CLIP tells words apart; a random one barely does (its outputs are dominated by
        # the shared position embeddings). Larger word embeddings restore that, and a 16-token context
        # keeps the few words of a toy caption from drowning among 70 padding tokens.
        max_tokens=16,
        word_scale=10.0,
    ),
    "sd15": RandomPreset(
        text_encoder=dict(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            hidden_act="quick_gelu",
            projection_dim=768,
        ),
        unet=dict(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        ),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512),
        identity_encoder=DEFAULT_IDENTITY_ENCODER,
    ),
}


def build_random_components(preset: str = "tiny", seed: int = 0) -> dict:
    """Components of a PortraitBoothPipeline with random weights; the same seed builds the same weights."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    tokenizer = tiny_tokenizer(config.max_tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **{"vocab_size": len(tokenizer), **config.text_encoder},
                max_position_embeddings=config.max_tokens,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        text_encoder.get_input_embeddings().weight.data.mul_(config.word_scale)
        unet = UNet2DConditionModel(**config.unet)
        levels = len(config.vae["block_out_channels"])
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            latent_channels=4,
            **config.vae,
        )
        identity_encoder = IdentityEncoder.from_preset(config.identity_encoder)
        text_dim = text_encoder.config.hidden_size
        stea = STEA(
            text_dim=text_dim,
            identity_dim=identity_encoder.feature_dim,
            hidden_dim=text_dim,
            fusion_encoder=config.identity_encoder,
            feature_layer=identity_encoder.config.feature_layer,
        )
        stea.fc2.reset_parameters()  # random like everything else here, so that faces change images
    return dict(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=PNDMScheduler(**SD15_SCHEDULE),
        stea=stea.eval(),
        fusion_encoder=identity_encoder.eval(),  # φ: what STEA fuses in every preset
    )
