"""Training checkpoints in safetensors and JSON only: no pickles to trust when resuming.

    OUT/checkpoints/step-000120/
        unet/, stea/            diffusers folders (config + safetensors): usable as portrait weights
        optimizer.safetensors   every tensor of the optimizer state
        state.json              optimizer hyper-parameters, LR-scheduler state, step, config
A checkpoint is written to a temporary folder and renamed when complete; the last K are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_folder(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS
    found = [(int(m.group(1)), path) for path in folder.glob("step-*") if (m := _NAME.match(path.name))] if folder.is_dir() else []
    return sorted(found)


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """`latest` → the newest complete checkpoint (None when there is none yet); else the given folder."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no state.json)")
    return path


def save_checkpoint(
    output_dir: Path,
    step: int,
    unet,
    stea,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    config: dict,
    keep: int,
    scaler=None,
) -> Path:
    """Write step `step` (with the fp16 loss scaler's state when there is one); keep the last `keep`."""
    final = checkpoint_folder(output_dir, step)
    for stale in final.parent.glob("step-*.tmp"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)

    def write(partial: Path) -> None:
        unet.save_pretrained(partial / "unet")
        stea.save_pretrained(partial / "stea")
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, partial / "optimizer.safetensors")
        state = {"step": step, "optimizer": groups, "lr_scheduler": _jsonable(lr_scheduler.state_dict()), "config": config}
        if scaler is not None:
            state["grad_scaler"] = _jsonable(scaler.state_dict())
        (partial / "state.json").write_text(json.dumps(state, indent=1))

    _write_folder_atomically(final, write)
    for _, old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_final_weights(folder: Path, unet, stea) -> None:
    """The trained weights as portrait weights (unet/, stea/), replaced only when complete."""

    def write(partial: Path) -> None:
        unet.save_pretrained(partial / "unet")
        stea.save_pretrained(partial / "stea")

    _write_folder_atomically(Path(folder), write)


def _write_folder_atomically(final: Path, write) -> None:
    partial = final.with_name(final.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write(partial)
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


def load_checkpoint(folder: Path, unet, stea, optimizer: torch.optim.Optimizer, lr_scheduler, scaler=None) -> int:
    """Restore weights, optimizer, LR scheduler (and loss scaler) in place; returns the step to continue from."""
    unet.load_state_dict(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    stea.load_state_dict(load_file(folder / "stea" / "diffusion_pytorch_model.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(folder / "optimizer.safetensors")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if scaler is not None and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    return int(state["step"])


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for param_id, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": _jsonable(state_dict["param_groups"]), "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *groups["scalars"].items()]:
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": groups["param_groups"]}


def _jsonable(value):
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
