"""Training configuration: one dataclass, one YAML per recipe (train/configs/), CLI overrides on top."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from portrait.defaults import BASE_MODEL_ID, DEFAULT_IDENTITY_ENCODER, PAPER_STEPS
from portrait.errors import OptionError
from portrait.exits import one_line
from portrait.prompts import EMOTION_WORDS, IDENTITY_WORDS
from portrait.settings import AT_LEAST_ONE, FRACTION, POSITIVE, Limit, check_fields

INHERIT = "inherit"  # a recipe key: the file (beside it) whose settings it starts from
DEFAULT_ECAC_LAYERS = ("down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.1", "up_blocks.2")


@dataclass
class TrainConfig:
    # models
    base: str = BASE_MODEL_ID  # hub id, folder, or a random preset: tiny, drawn, sd15
    identity_encoder: str = DEFAULT_IDENTITY_ENCODER  # φ: measures identity (L_id) and, by default, feeds STEA
    fusion_encoder: str | None = None  # what STEA fuses instead of φ's feature ("clip_vit_l14": the w/o-STEA ablation)
    train_fusion_encoder: bool = False  # train that encoder with the UNet (the paper's w/o-STEA row does)
    identity_checkpoint: str | None = None
    # Not the paper's recipe (it starts from SD 1.5's UNet): "fastcomposer" (the hub's checkpoint) or the path of
    # FastComposer's pytorch_model.bin starts the UNet from FastComposer's fine-tuned one (portrait/fastcomposer.py).
    init_unet_from: str | None = None
    feature_layer: str = "stage4"
    identity_words: tuple[str, ...] = IDENTITY_WORDS
    emotion_words: tuple[str, ...] = EMOTION_WORDS
    # data
    resolution: int = 512
    text_only_fraction: float = 0.1  # caption kept, no face feature
    unconditional_fraction: float = 0.1  # empty caption, no face
    masked_noise_fraction: float = 0.5  # samples whose noise loss is taken inside the face mask only
    flip_probability: float = 0.5
    mask_kind: str = "face"  # "face" (paper) or "person" (ablation)
    image_cache: int = 0  # decoded pictures kept in memory by the reader (small sets only; 0: read every time)
    # losses (docs/method.md, "Losses")
    noise_weight: float = 1.0
    identity_weight: float = 1.0  # L_id (DIP); 0 turns it off
    localization_weight: float = 1.0  # L_loc (ECAC); 0 turns it off
    identity_timestep_max: int = 250  # R_t
    beta: float = 0.8
    gamma: float = 0.1
    lam: float = 0.001
    mu: float = 0.01
    ecac_layers: tuple[str, ...] = DEFAULT_ECAC_LAYERS
    # optimisation
    learning_rate: float = 1e-5
    lr_warmup_steps: int = 0  # linear warm-up to learning_rate, then constant (the paper: constant from the start)
    batch_size: int = 2  # per device
    max_steps: int = 150_000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False
    mixed_precision: str = "bf16"  # "no", "fp16", "bf16"
    gradient_checkpointing: bool = True
    # one GPU's memory (README, "Hardware"; the device check measures each); use_8bit_adam above is CUDA only
    allow_tf32: bool = False  # TF32 for fp32 matrix products on Ampere and newer GPUs (faster, 10-bit mantissa)
    lora_rank: int = 0  # 0: the whole UNet trains; r > 0: a rank-r LoRA on its attention layers (STEA trains fully)
    lora_alpha: float | None = None  # the LoRA's scale is alpha / rank; default alpha = rank (scale 1)
    lora_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # the UNet layers that get a LoRA
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    validation_every: int = 5000
    validation_prompts: tuple[str, ...] = ("a photo of a {word} in the snow", "a {word} wearing a hat, oil painting")
    validation_steps: int = PAPER_STEPS
    num_workers: int = 4

    def __post_init__(self) -> None:
        check_fields(self, LIMITS)  # every field's type from its annotation; ranges below (ints default to ≥ 0)
        if self.train_fusion_encoder and not self.fusion_encoder:
            raise OptionError(
                "train_fusion_encoder trains the encoder fusion_encoder names; without one it would train φ, which measures L_id"
            )

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "TrainConfig":
        values = load_recipe(path)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise OptionError(f"{path}: unknown settings {sorted(unknown)}")
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(**values)
        except OptionError as error:
            raise OptionError(f"{path}: {error}") from None

    def to_dict(self) -> dict:
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }


LIMITS = {
    "resolution": Limit(8),
    "text_only_fraction": FRACTION,
    "unconditional_fraction": FRACTION,
    "masked_noise_fraction": FRACTION,
    "flip_probability": FRACTION,
    "mask_kind": Limit(choices=("face", "person")),
    "noise_weight": Limit(0.0),
    "identity_weight": Limit(0.0),
    "localization_weight": Limit(0.0),
    "beta": Limit(0.0),
    "gamma": Limit(0.0),
    "lam": Limit(0.0),
    "mu": Limit(0.0),
    "learning_rate": POSITIVE,
    "batch_size": AT_LEAST_ONE,
    "max_steps": AT_LEAST_ONE,
    "adam_beta1": Limit(0.0, 1.0, high_open=True),
    "adam_beta2": Limit(0.0, 1.0, high_open=True),
    "adam_weight_decay": Limit(0.0),
    "adam_epsilon": POSITIVE,
    "max_grad_norm": POSITIVE,
    "mixed_precision": Limit(choices=("no", "fp16", "bf16")),
    "log_every": AT_LEAST_ONE,
    "checkpoint_every": AT_LEAST_ONE,
    "keep_checkpoints": AT_LEAST_ONE,
}


def load_recipe(path: str | Path, inherited_by: tuple[Path, ...] = ()) -> dict:
    """A recipe file's settings on top of those of the recipe it names in `inherit` (a file beside it), so an
    ablation says only what it changes."""
    path = Path(path)
    values = read_recipe_file(path)
    parent = values.pop(INHERIT, None)
    if parent is None:
        return values
    if path.resolve() in inherited_by:
        raise OptionError(f"{path}: recipes inherit in a circle ({' → '.join(p.name for p in (*inherited_by, path))})")
    return load_recipe(path.parent / str(parent), (*inherited_by, path.resolve())) | values


def recipe_changes(path: str | Path) -> dict:
    """What a recipe changes in the recipe it inherits: the settings written in the file itself."""
    return {key: value for key, value in read_recipe_file(path).items() if key != INHERIT}


def read_recipe_file(path: str | Path) -> dict:
    try:
        return read_recipe(Path(path).read_text())
    except yaml.YAMLError as error:
        raise OptionError(f"{path} is not a recipe: {one_line(str(error))}") from None
    except OptionError as error:
        raise OptionError(f"{path}: {error}") from None


def read_recipe(text: str) -> dict:
    """A recipe's settings. Aliases (`*name`) are refused before anything is built: a few hundred bytes of
    nested aliases expand to billions of strings (a "billion laughs")."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise OptionError(f"YAML aliases (*{event.anchor}) are not allowed in recipes; write the values out")
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise OptionError("not a recipe (a YAML mapping of settings, as in train/configs/)")
    return values
