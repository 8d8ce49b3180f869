"""FastComposer's published checkpoint as an identity model of PortraitBooth's pipeline.

FastComposer (mit-han-lab/fastcomposer, MIT licence) is Stable Diffusion 1.5 with a fine-tuned UNet and
text encoder, CLIP ViT-L/14's vision tower and a fusion module; its one file `pytorch_model.bin` is the
state dict of their `FastComposerModel`, with key groups `unet.`, `vae.`, `text_encoder.` (embeddings,
encoder, final_layer_norm), `image_encoder.` (vision_model, visual_projection) and `postfuse_module.`
(mlp1, mlp2, layer_norm). Here those become the pipeline's `unet`, `text_encoder`, `fusion_encoder`
(`FastComposerImageEncoder`) and `stea` (`FastComposerFusion`) slots; the load is strict: every key is
used or named as ignored in one logged line, and a key or shape that does not fit is one error naming it.

`--identity-model fastcomposer` takes the hub's file (cache first), `--identity-model PATH` a local file,
or a folder `portrait convert fastcomposer PATH OUT` wrote (which loads offline like any saved pipeline).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .errors import DataError, MissingWeightsError
from .identity.clip_features import TINY_VISION
from .identity.fastcomposer_image import VIT_L14_VISION, FastComposerImageEncoder
from .loading import resolve_pretrained
from .pipeline import PortraitBoothPipeline
from .postfuse import FASTCOMPOSER_ENCODER, FastComposerFusion
from .presets import PRESETS
from .weights import FASTCOMPOSER

logger = logging.getLogger(__name__)

NAME = "fastcomposer"  # --identity-model's word for the hub checkpoint
HUB_ID = FASTCOMPOSER.repo_id  # declared once, in the weights registry (`portrait weights`)
CHECKPOINT_FILE = FASTCOMPOSER.required[0]
LICENCE = "MIT"
IMAGE_MARKER = "img"  # FastComposer's marker word, after the word that names a person
KNOWN_VISION = (VIT_L14_VISION, TINY_VISION)  # what their checkpoint holds (ViT-L/14), and our tests' tiny stand-in
VISION_PREFIX = "image_encoder.vision_model."

# checkpoint prefix → (pipeline slot, prefix inside that module, the sub-groups FastComposerModel has)
KEY_GROUPS = {
    "unet.": ("unet", "", None),
    "text_encoder.": (
        "text_encoder",
        "",
        ("embeddings.", "encoder.", "final_layer_norm."),
    ),  # "text_model." before transformers 5
    "image_encoder.": ("fusion_encoder", "vision.", ("vision_model.", "visual_projection.")),
    "postfuse_module.": ("stea", "", ("mlp1.", "mlp2.", "layer_norm.")),
}
IGNORED_GROUPS = {"vae.": "SD 1.5's VAE, frozen in their training; the base's is used, as their inference does"}
POSITION_IDS = "embeddings.position_ids"  # a constant 0..n−1 buffer that older transformers saved; rebuilt here


@dataclass
class LoadReport:
    """Where every key of a checkpoint went: counts per pipeline slot, and the keys ignored, by reason."""

    used: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, list[str]] = field(default_factory=dict)
    img_token_added: bool = False

    def line(self, source: str) -> str:
        used = ", ".join(f"{slot} {count}" for slot, count in self.used.items())
        ignored = "; ".join(f"{_keys_text(keys)} ({reason})" for reason, keys in self.ignored.items()) or "none"
        marker = (
            f"; tokenizer entry {IMAGE_MARKER!r} added for the embedding table's extra row"
            if self.img_token_added
            else ""
        )
        return f"FastComposer checkpoint {source}: used {sum(self.used.values())} keys ({used}); ignored: {ignored}{marker}"


def checkpoint_path(spec: str | os.PathLike) -> Path:
    """The checkpoint file `spec` names: `fastcomposer` (the hub's, cache first), a file, or a folder holding it."""
    if str(spec) == NAME:
        return _hub_checkpoint()
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise MissingWeightsError(
            f"No FastComposer checkpoint at {path}: give the path of their {CHECKPOINT_FILE} ({HUB_ID} on the "
            f"Hugging Face hub) or `{NAME}` to take it from the hub"
        )
    return path


def _hub_checkpoint() -> Path:
    import httpx
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(hf_hub_download(HUB_ID, CHECKPOINT_FILE, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    try:
        logger.info("Fetching %s/%s from the Hugging Face hub", HUB_ID, CHECKPOINT_FILE)
        return Path(hf_hub_download(HUB_ID, CHECKPOINT_FILE))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, httpx.HTTPError, OSError) as error:
        raise MissingWeightsError(
            f"FastComposer's checkpoint {HUB_ID}/{CHECKPOINT_FILE} is not in the Hugging Face cache and could not be "
            f"downloaded ({type(error).__name__}): run `hf download {HUB_ID} {CHECKPOINT_FILE}` where the hub can be "
            "reached, or pass --identity-model PATH to the file"
        ) from error


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Their state dict, read with weights_only=True (tensors only; never code), memory-mapped when it can be."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise DataError(f"{path} is not a state dict of tensors, as FastComposer's {CHECKPOINT_FILE} is")
    return state


def vision_config_of(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """The CLIP vision tower's config, read off the checkpoint's shapes (their vision tower is not the base's).
    Shapes do not say the number of attention heads: it is the known tower's of that width (ViT-L/14: 16),
    else CLIP's 64-wide heads."""
    needed = {
        "hidden": VISION_PREFIX + "embeddings.class_embedding",
        "patch": VISION_PREFIX + "embeddings.patch_embedding.weight",
        "positions": VISION_PREFIX + "embeddings.position_embedding.weight",
        "mlp": VISION_PREFIX + "encoder.layers.0.mlp.fc1.weight",
        "projection": "image_encoder.visual_projection.weight",
    }
    absent = [key for key in needed.values() if key not in state]
    if absent:
        raise DataError(f"{source} does not fit FastComposer's layout: missing {_keys_text(absent)}")
    hidden = state[needed["hidden"]].shape[0]
    patch = state[needed["patch"]].shape[-1]
    layer_prefix = VISION_PREFIX + "encoder.layers."
    layers = 1 + max(int(key[len(layer_prefix) :].split(".")[0]) for key in state if key.startswith(layer_prefix))
    known = next((config for config in KNOWN_VISION if config["hidden_size"] == hidden), None)
    return {
        **(known or {}),
        "hidden_size": hidden,
        "intermediate_size": state[needed["mlp"]].shape[0],
        "num_hidden_layers": layers,
        "num_attention_heads": known["num_attention_heads"] if known else max(1, hidden // 64),
        "patch_size": patch,
        "image_size": patch * round((state[needed["positions"]].shape[0] - 1) ** 0.5),
        "projection_dim": state[needed["projection"]].shape[0],
    }


def fastcomposer_modules(
    state: dict[str, torch.Tensor],
    unet_config: dict,
    text_config: CLIPTextConfig,
    tokenizer: CLIPTokenizer,
    source: str = "checkpoint",
) -> tuple[dict, LoadReport]:
    """The pipeline modules a FastComposer state dict fills (unet, text_encoder, tokenizer, fusion_encoder,
    stea), built for the base's configs; raises `DataError` naming the first key or shape that does not fit."""
    report = LoadReport()
    rows = _embedding_rows(state, source)
    if rows == len(tokenizer) + 1:  # their training tokenizer's marker token has a row of its own
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.add_tokens([IMAGE_MARKER], special_tokens=True)
        report.img_token_added = True
    text_dim = text_config.hidden_size
    vision_config = vision_config_of(state, source)
    if vision_config["projection_dim"] != text_dim:
        raise DataError(
            f"{source} does not fit this base: image_encoder.visual_projection.weight gives {vision_config['projection_dim']}-d "
            f"image embeddings where the base's text encoder is {text_dim}-d"
        )
    modules = {
        "unet": UNet2DConditionModel.from_config(unet_config),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**{**text_config.to_dict(), "vocab_size": len(tokenizer)})),
        "fusion_encoder": FastComposerImageEncoder(FASTCOMPOSER_ENCODER, vision_config),
        "stea": FastComposerFusion(text_dim=text_dim, identity_dim=vision_config["projection_dim"]),
    }
    pieces = _split(state, modules, report, source)
    for slot, piece in pieces.items():
        modules[slot].load_state_dict(piece, strict=True)
        modules[slot].eval()
        report.used[slot] = len(piece)
    return {**modules, "tokenizer": tokenizer}, report


def _embedding_rows(state: dict[str, torch.Tensor], source: str) -> int:
    key = "text_encoder.embeddings.token_embedding.weight"
    if key not in state:
        raise DataError(f"{source} is not a FastComposer checkpoint: it lacks {key}")
    return state[key].shape[0]


def _split(state: dict[str, torch.Tensor], modules: dict, report: LoadReport, source: str) -> dict[str, dict]:
    """The checkpoint's keys sorted into each module's own names; every key used, ignored or refused."""
    groups_here = {
        prefix: (slot, _inner_prefix(modules[slot], inner), groups)
        for prefix, (slot, inner, groups) in KEY_GROUPS.items()
    }
    pieces: dict[str, dict] = {slot: {} for slot, _, _ in KEY_GROUPS.values()}
    unknown: list[str] = []
    for key, value in state.items():
        ignored = next((reason for prefix, reason in IGNORED_GROUPS.items() if key.startswith(prefix)), None)
        if ignored is None and key.endswith(POSITION_IDS):
            ignored = "constant position-index buffers older transformers saved; rebuilt by the model"
        if ignored is not None:
            report.ignored.setdefault(ignored, []).append(key)
            continue
        prefix = next((prefix for prefix in groups_here if key.startswith(prefix)), None)
        groups = groups_here[prefix][2] if prefix else None
        if prefix is None or (groups is not None and not key[len(prefix) :].startswith(groups)):
            unknown.append(key)
            continue
        slot, inner, _ = groups_here[prefix]
        pieces[slot][inner + key[len(prefix) :]] = value
    missing, unexpected, shapes = [], unknown, []
    for prefix, (slot, inner, _) in groups_here.items():
        found = _misfits(
            pieces[slot],
            modules[slot].state_dict(),
            lambda name, prefix=prefix, inner=inner: prefix + name[len(inner) :],
        )
        missing, unexpected, shapes = missing + found[0], unexpected + found[1], shapes + found[2]
    _refuse_misfits(source, missing, unexpected, shapes)
    return pieces


def _inner_prefix(module: torch.nn.Module, inner: str) -> str:
    """Where the group's keys sit inside `module`: transformers before version 5 wraps CLIP's text tower in `text_model`."""
    return "text_model." if isinstance(module, CLIPTextModel) and hasattr(module, "text_model") else inner


def _misfits(provided: dict, expected: dict, shown) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shapes) of `provided` against a module's `expected` state dict, named by `shown`."""
    missing = [shown(name) for name in expected if name not in provided]
    unexpected = [shown(name) for name in provided if name not in expected]
    shapes = [
        f"{shown(name)} has shape {tuple(value.shape)} where this base needs {tuple(expected[name].shape)}"
        for name, value in provided.items()
        if name in expected and value.shape != expected[name].shape
    ]
    return missing, unexpected, shapes


def _refuse_misfits(source: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> None:
    problems = [f"missing {_keys_text(missing)}"] if missing else []
    problems += [f"unexpected {_keys_text(unexpected)}"] if unexpected else []
    problems += (
        [shapes[0] + (f" (and {len(shapes) - 1} more wrong shapes)" if len(shapes) > 1 else "")] if shapes else []
    )
    if problems:
        raise DataError(f"{source} does not fit FastComposer's layout on this base: " + "; ".join(problems))


def _keys_text(keys: list[str]) -> str:
    """The keys in a few words: a whole group as `vae.* (N keys)`, else the first key and how many more."""
    group = keys[0].split(".", 1)[0] + "."
    if len(keys) > 1 and group in IGNORED_GROUPS and all(key.startswith(group) for key in keys):
        return f"{group}* ({len(keys)} keys)"
    return keys[0] if len(keys) == 1 else f"{keys[0]} and {len(keys) - 1} more"


def load_fastcomposer_pipeline(
    base: str, spec: str | os.PathLike, seed: int = 0, dtype: torch.dtype | None = None
) -> PortraitBoothPipeline:
    """PortraitBooth's pipeline running FastComposer: `spec` is `fastcomposer`, a checkpoint file, or a
    converted folder (which is the whole pipeline, so `base` is not read)."""
    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / "model_index.json").is_file():
        pipe = PortraitBoothPipeline.from_pretrained(folder, dtype=dtype)
        if not isinstance(pipe.stea, FastComposerFusion):
            raise DataError(
                f"{folder} is a saved pipeline but not a converted FastComposer (its fusion is {type(pipe.stea).__name__})"
            )
        return pipe
    if base in PRESETS:
        plain = PortraitBoothPipeline.from_random_preset(base, seed=seed)
        configs = (plain.unet.config, plain.text_encoder.config, plain.tokenizer)
    else:
        root = resolve_pretrained(base, "Base model")  # a missing base is said before the checkpoint is read
        configs = (
            UNet2DConditionModel.load_config(root / "unet"),
            CLIPTextConfig.from_pretrained(root / "text_encoder"),
            CLIPTokenizer.from_pretrained(root / "tokenizer"),
        )
    path = checkpoint_path(spec)
    modules, report = fastcomposer_modules(read_checkpoint(path), *configs, source=str(path))
    logger.info(report.line(str(path)))
    if base in PRESETS:
        return plain.with_modules(**modules)
    return PortraitBoothPipeline.from_pretrained(root, dtype=dtype, **modules)


def load_fastcomposer_unet(unet: UNet2DConditionModel, spec: str | os.PathLike) -> None:
    """Overwrite `unet` with FastComposer's fine-tuned UNet (the `init_unet_from: fastcomposer` training option)."""
    path = checkpoint_path(spec)
    state = {
        key.removeprefix("unet."): value for key, value in read_checkpoint(path).items() if key.startswith("unet.")
    }
    _refuse_misfits(str(path), *_misfits(state, unet.state_dict(), lambda name: f"unet.{name}"))
    unet.load_state_dict(state, strict=True)
    logger.info("UNet initialised from FastComposer's (%s, %d keys)", path, len(state))


def is_fastcomposer(pipe: PortraitBoothPipeline) -> bool:
    return isinstance(pipe.stea, FastComposerFusion)
