"""The `tiny` preset: every component of the pipeline, with the real architectures, at toy size.

Random weights, no download, a few seconds on a CPU. Images it makes are noise: it exists so that the
whole engine (and the app, training and evaluation) can run and be tested where no weights are.
The CLIP tokenizer is a real byte-level BPE tokenizer whose vocabulary and merge files are written
here: whole-word tokens for the words prompts use most, single characters for everything else.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .identity.encoder import IdentityEncoder
from .prompts import EMOTION_WORDS, IDENTITY_WORDS
from .stea import STEA

TINY_TEXT_DIM = 32
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
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
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


def build_tiny_components(seed: int = 0) -> dict:
    """Components of a PortraitBoothPipeline on the tiny preset; the same seed builds the same weights."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = CLIPTokenizer.from_pretrained(write_tiny_tokenizer(folder), model_max_length=77)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TINY_TEXT_DIM,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TINY_TEXT_DIM,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=64,
        )
        identity_encoder = IdentityEncoder.from_preset("tiny")
        stea = STEA(
            text_dim=TINY_TEXT_DIM,
            identity_dim=identity_encoder.feature_dim,
            hidden_dim=TINY_TEXT_DIM,
            identity_encoder="tiny",
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
        identity_encoder=identity_encoder.eval(),
    )
