"""The training reader: manifest rows → tensors, with the paper's dropout and aligned augmentation.

Randomness is drawn from (seed, step, slot) through `StepBatchSampler`, never from global state,
so an interrupted run that resumes at step k sees exactly the batches it would have seen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from portrait.errors import DataError, OptionError, PromptError
from portrait.images import image_to_tensor
from portrait.prompts import token_index

from .config import TrainConfig
from .data_format import Sample, read_manifest

NO_TOKEN = -1
FLIPPED_LANDMARKS = [1, 0, 2, 4, 3]  # a mirror swaps the eyes and the mouth corners


@dataclass(frozen=True)
class Draw:
    """Which sample, and the seed of everything random about it in this step."""

    index: int
    seed: int


class StepBatchSampler(Sampler):
    """Batches for steps start..end-1, each a pure function of (seed, step, rank)."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, end_step: int, rank: int = 0):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.end_step, self.rank = start_step, end_step, rank

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self) -> Iterator[list[Draw]]:
        for step in range(self.start_step, self.end_step):
            rng = np.random.default_rng((self.seed, step, self.rank))
            indices = rng.integers(0, self.size, self.batch_size)
            seeds = rng.integers(0, 2**63 - 1, self.batch_size)
            yield [Draw(int(i), int(s)) for i, s in zip(indices, seeds)]


def training_samples(root: str | Path) -> list[Sample]:
    """The manifest of a prepared set; a missing or empty one is a `DataError`."""
    samples = read_manifest(Path(root))
    if not samples:
        raise DataError(f"{root} holds no training samples")
    return samples


class PortraitDataset(Dataset):
    def __init__(self, root: str | Path, tokenizer, config: TrainConfig, samples: list[Sample] | None = None):
        """samples: `training_samples(root)`, when the caller has read them already."""
        self.root = Path(root)
        self.samples = training_samples(self.root) if samples is None else samples
        self.tokenizer = tokenizer
        self.config = config
        self._make_caches()
        self.word_map = _identity_word_map(config.identity_words)
        if config.mask_kind == "person" and any(sample.person_mask is None for sample in self.samples):
            raise DataError(
                f"mask_kind 'person' needs person masks; {root} was prepared without them (use --mask bisenet)"
            )

    def _make_caches(self) -> None:
        size = self.config.image_cache
        self._picture = functools.lru_cache(maxsize=size)(_read_picture) if size else _read_picture
        self._input_ids = functools.lru_cache(maxsize=4096)(self._tokenize)  # captions repeat; tokenizing costs
        self._token = functools.lru_cache(maxsize=4096)(self._token_index)

    def __getstate__(self) -> dict:  # DataLoader workers started by spawn get fresh caches
        return {k: v for k, v in self.__dict__.items() if k not in ("_picture", "_input_ids", "_token")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_caches()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, draw: Draw) -> dict[str, torch.Tensor]:
        sample = self.samples[draw.index]
        rng = np.random.default_rng(draw.seed)
        config = self.config
        image = self._picture(self.root / sample.image, "RGB")
        mask_file = sample.person_mask if config.mask_kind == "person" else sample.mask
        mask = self._picture(self.root / mask_file, "L")
        landmarks = np.asarray(sample.landmarks, dtype=np.float32)
        image, mask, landmarks = _resize_and_crop(image, mask, landmarks, config.resolution, rng)
        if rng.random() < config.flip_probability:
            image, mask = image.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
            landmarks = landmarks[FLIPPED_LANDMARKS] * [-1, 1] + [config.resolution - 1, 0]
        caption, identity_span, expression_span = self._caption(sample)
        roll = rng.random()
        unconditional = roll < config.unconditional_fraction
        text_only = not unconditional and roll < config.unconditional_fraction + config.text_only_fraction
        if unconditional:
            caption, identity_span, expression_span = "", None, None
        identity_token = self._token(caption, identity_span)
        return {
            "pixel_values": image_to_tensor(image) * 2 - 1,
            "face_mask": image_to_tensor(mask.convert("RGB"))[:1],
            "reference": image_to_tensor(self._picture(self.root / sample.reference, "RGB")),
            "landmarks": torch.from_numpy(np.ascontiguousarray(landmarks)),
            "input_ids": self._input_ids(caption),
            "identity_token": torch.tensor(identity_token),  # where ECAC looks (NO_TOKEN: unconditional)
            "face_token": torch.tensor(NO_TOKEN if text_only else identity_token),  # where STEA adds the face
            "expression_token": torch.tensor(self._token(caption, expression_span)),
            "masked_noise": torch.tensor(bool(rng.random() < config.masked_noise_fraction)),
        }

    def _caption(self, sample: Sample) -> tuple[str, tuple[int, int], tuple[int, int] | None]:
        """The caption with the recipe's identity word (ablations rename man/woman)."""
        word = self.word_map.get(sample.identity_word, sample.identity_word)
        start, end = sample.identity_span
        caption = sample.caption[:start] + word + sample.caption[end:]
        shift = len(word) - (end - start)
        expression_span = sample.expression_span
        if expression_span and expression_span[0] >= end:
            expression_span = (expression_span[0] + shift, expression_span[1] + shift)
        return caption, (start, start + len(word)), expression_span

    def _tokenize(self, caption: str) -> torch.Tensor:
        return self.tokenizer(
            caption,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids[0]

    def _token_index(self, caption: str, span: tuple[int, int] | None) -> int:
        if span is None:
            return NO_TOKEN
        try:
            return token_index(self.tokenizer, caption, span)
        except PromptError:
            return NO_TOKEN  # past the 77-token window: the loss skips this word


def _read_picture(path: Path, mode: str) -> Image.Image:
    return Image.open(path).convert(mode)


def _identity_word_map(identity_words: tuple[str, ...]) -> dict[str, str]:
    """man/woman → the recipe's words: one word for everyone, or a pair in man, woman order."""
    if tuple(identity_words) == ("man", "woman"):
        return {}
    if len(identity_words) == 1:
        return {"man": identity_words[0], "woman": identity_words[0]}
    if len(identity_words) == 2:
        return {"man": identity_words[0], "woman": identity_words[1]}
    raise OptionError(f"identity_words must be one word or a (man, woman) pair, got {identity_words}")


def _resize_and_crop(
    image: Image.Image, mask: Image.Image, landmarks: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """Shorter side to `size`, then a random square crop that keeps the whole face box if it can."""
    scale = size / min(image.size)
    width, height = round(image.width * scale), round(image.height * scale)
    image = image.resize((width, height), Image.BICUBIC)
    mask = mask.resize((width, height), Image.NEAREST)
    points = landmarks * scale
    low = np.clip(points.max(axis=0) - size + 1, 0, None)
    high = np.clip(points.min(axis=0), None, [width - size, height - size])
    low, high = np.minimum(low, high), np.maximum(low, high)
    x0, y0 = (int(rng.integers(int(lo), int(hi) + 1)) for lo, hi in zip(low, high))
    box = (x0, y0, x0 + size, y0 + size)
    return image.crop(box), mask.crop(box), points - [x0, y0]


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
