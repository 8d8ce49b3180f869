"""Training checkpoints the accelerate way: `accelerator.save_state` / `load_state`.

    OUT/checkpoints/step-000120/
        unet/, stea/        diffusers folders (config + safetensors), written by a save hook: usable as
                            portrait weights as they are (unet_lora/ instead of unet/ for a LoRA recipe)
        optimizer.bin, scheduler.bin, random_states_<rank>.pkl (and scaler.pt with fp16): accelerate's files
        pytorch_model/      under DeepSpeed only, instead of optimizer.bin: its engine's model and optimizer
                            shards (DeepSpeed's own format, read back by DeepSpeed)

The models are read back from their safetensors by a load hook; accelerate reads its own files with
`torch.load(weights_only=True)`, which admits tensors and plain values only, never code. Every process
writes its part of a checkpoint into one temporary folder, which the main process renames when all are
done; the last K are kept. Its step is its name.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator
from safetensors.torch import load_file

from portrait.errors import DataError
from portrait.files import atomic_path
from portrait.portrait_weights import FUSION_FOLDER, fusion_folder, part_folder

from .memory import has_lora, load_unet_lora, save_unet_lora
from .parts import TrainedParts

CHECKPOINTS = "checkpoints"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
DEEPSPEED_STATE = "pytorch_model"  # accelerate's folder for a DeepSpeed engine's checkpoint
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_folder(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS
    found = (
        [(int(m.group(1)), path) for path in folder.glob("step-*") if (m := _NAME.match(path.name))]
        if folder.is_dir()
        else []
    )
    return sorted(found)


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """`latest` → the newest complete checkpoint (None when there is none yet); else the given folder."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    complete = (path / "optimizer.bin").is_file() or (path / DEEPSPEED_STATE).is_dir()
    if not _NAME.match(path.name) or not complete:
        raise DataError(
            f"{path} is not a complete checkpoint (a step-N folder with optimizer.bin or {DEEPSPEED_STATE}/)"
        )
    return path


def _parts(accelerator: Accelerator, model) -> list:
    """The modules of a prepared `TrainedParts`."""
    parts: TrainedParts = accelerator.unwrap_model(model)
    return list(parts.weights().values())


def register_model_hooks(accelerator: Accelerator) -> None:
    """Save and load the trained models as diffusers folders inside accelerate's checkpoints."""

    def save(models, weights, output_dir) -> None:
        if accelerator.is_main_process:
            for model in models:
                for part in _parts(accelerator, model):
                    save_part(part, Path(output_dir))
        weights.clear()  # the folders hold them: accelerate writes no second copy

    def load(models, input_dir) -> None:  # (under DeepSpeed `models` is empty: its engine reads its own files)
        while models:
            for part in _parts(accelerator, models.pop()):
                if has_lora(part):
                    load_unet_lora(part, Path(input_dir))
                else:
                    part.load_state_dict(load_file(part_in_checkpoint(Path(input_dir), part) / WEIGHTS_FILE))

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def part_in_checkpoint(checkpoint: Path, part) -> Path:
    """Where a checkpoint keeps `part`; a fusion encoder saved before that folder had its name is still found."""
    folder = checkpoint / part_folder(part)
    return fusion_folder(checkpoint) if folder.name == FUSION_FOLDER else folder


def save_part(model, folder: Path) -> None:
    """One trained model in its folder of a weights folder; of a UNet with a LoRA, the LoRA alone."""
    if has_lora(model):
        save_unet_lora(model, folder)
    else:
        model.save_pretrained(folder / part_folder(model))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """Step `step`'s full training state, called by every process; the last `keep` checkpoints are kept."""
    final = checkpoint_folder(output_dir, step)
    partial = final.with_name(f".{final.name}.partial")  # one name for all processes: each writes its files there
    if accelerator.is_main_process:
        for stale in final.parent.glob(".step-*.partial"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)  # a fresh run into an old output folder
        os.replace(partial, final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, folder: Path) -> int:
    """Restore everything `save_checkpoint` wrote into the prepared objects; the step to continue from."""
    accelerator.load_state(str(folder))
    return int(_NAME.match(folder.name).group(1))


def save_final_weights(folder: Path, weights: dict) -> None:
    """The trained weights as portrait weights (unet/ or unet_lora/, stea/, and fusion_encoder/ when it
    was trained), replaced only when complete."""
    with atomic_path(folder) as partial:
        for model in weights.values():
            save_part(model, partial)
