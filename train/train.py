"""Train PortraitBooth (UNet + STEA) with the paper's objective: L_noise + L_id (DIP) + L_loc (ECAC).

    accelerate launch -m train.train --config train/configs/paper.yaml --data DIR --output-dir OUT
    python -m train.train --config train/configs/tiny.yaml --data DIR --output-dir OUT --max-steps 20
    ... --resume latest                       continue from the newest checkpoint in OUT

The final weights land in OUT/final (unet/, stea/) and load with
`PortraitBoothPipeline.from_pretrained(base, portrait_weights="OUT/final")`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from portrait.engine import ModelSource, load_pipeline
from portrait.exits import CommandParser, positive_int
from portrait.exits import run as run_command
from portrait.fastcomposer import load_fastcomposer_unet
from portrait.files import write_png, write_text
from portrait.identity import load_fusion_encoder
from portrait.identity.encoder import IdentityEncoder
from portrait.pipeline import FaceEncoding, PortraitBoothPipeline
from portrait.stea import STEA

from .attention import AttentionStore, install_attention_capture
from .checkpoints import load_checkpoint, register_model_hooks, resolve_resume, save_checkpoint, save_final_weights
from .config import TrainConfig
from .dataset import Draw, PortraitDataset, StepBatchSampler, collate, training_samples
from .losses import decoded_face_embedding, identity_loss, localization_loss, noise_loss, one_step_reverse
from .memory import adamw_class, add_unet_lora, set_tf32
from .parts import TrainedParts, check_deepspeed, fit_deepspeed, restore_fp32_weights

logger = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(prog="python -m train.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="recipe YAML (train/configs/)")
    parser.add_argument("--data", required=True, type=Path, help="prepared training set (manifest.jsonl)")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--max-steps", type=positive_int)
    parser.add_argument("--resume", help="'latest' or a checkpoint folder")
    parser.add_argument("--base", help="override the recipe's base model")
    parser.add_argument("--identity-checkpoint", help="φ's .pth (default: the weights folder)")
    parser.add_argument("--seed", type=int)
    return parser.parse_args(argv)


@dataclass
class Models:
    pipeline: PortraitBoothPipeline  # the base as loaded (validation samples through it with the trained parts)
    unet: torch.nn.Module
    stea: STEA
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    fusion_encoder: torch.nn.Module  # what STEA fuses (φ, or CLIP in the ablation): saved with the weights
    loss_encoder: IdentityEncoder  # φ, which measures identity for L_id
    noise_scheduler: DDPMScheduler
    base_scheduler_config: dict


def build_models(config: TrainConfig) -> Models:
    """The base pipeline's modules (through the engine's one loader), φ, and a fresh STEA whose zero
    residual starts as plain SD."""
    source = ModelSource(
        base=config.base,
        identity_encoder=config.identity_encoder,
        feature_layer=config.feature_layer,
        identity_checkpoint=Path(config.identity_checkpoint) if config.identity_checkpoint else None,
        untrained_stea=True,
        safety_checker=False,  # research use: validation pictures are for the trainer
        watermark=False,
        seed=config.seed,
        device="cpu",
        dtype="fp32",
    )
    pipe = load_pipeline(source)
    if config.init_unet_from:  # not the paper's recipe: a warm start from FastComposer's fine-tuned UNet
        load_fastcomposer_unet(pipe.unet, config.init_unet_from)
    loss_encoder = pipe.fusion_encoder  # φ (config.identity_encoder), which the untrained STEA loaded here fuses
    fusion_encoder = load_fusion_encoder(config.fusion_encoder) if config.fusion_encoder else loss_encoder
    torch.manual_seed(config.seed)  # STEA's first layer starts from the recipe's seed
    stea = STEA.from_config(
        pipe.stea.config,
        identity_dim=fusion_encoder.feature_dim,
        fusion_encoder=fusion_encoder.config.architecture,
        feature_layer=fusion_encoder.config.feature_layer,
        identity_words=tuple(config.identity_words),
        emotion_words=tuple(config.emotion_words),
    )
    return Models(
        pipeline=pipe,
        unet=pipe.unet,
        stea=stea,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        fusion_encoder=fusion_encoder,
        loss_encoder=loss_encoder,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        base_scheduler_config=dict(pipe.scheduler.config),
    )


class Objective:
    """One step's losses for a batch; owns the frozen modules and the attention store."""

    def __init__(self, models: Models, config: TrainConfig, store: AttentionStore | None, dtype: torch.dtype):
        self.models, self.config, self.store, self.dtype = models, config, store, dtype
        self.alphas_cumprod = models.noise_scheduler.alphas_cumprod

    def __call__(
        self, parts: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """parts: the `TrainedParts`, as prepared (wrapped by DDP or DeepSpeed) or as they are."""
        models, config = self.models, self.config
        trains_fusion = config.train_fusion_encoder  # then `parts` encodes the faces itself
        device = batch["pixel_values"].device
        faces = batch["reference"].to(self.dtype)
        with torch.no_grad():
            latents = models.vae.encode(batch["pixel_values"].to(self.dtype)).latent_dist.sample(generator)
            latents = latents * models.vae.config.scaling_factor
            text = models.text_encoder(batch["input_ids"])[0]
            # STEA fuses the frozen encoder's features, or the faces themselves when the encoder trains too
            reference = None if trains_fusion else models.fusion_encoder(faces)
            # φ measures L_id; when it is also the frozen encoder STEA fuses, one pass serves both
            same = not trains_fusion and models.loss_encoder is models.fusion_encoder
            reference_identity = reference.embedding if same else models.loss_encoder(faces).embedding
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        steps = models.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device)
        noisy = models.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.store is not None:
            self.store.token_indices = torch.stack([batch["identity_token"], batch["expression_token"]], dim=1)
            self.store.latent_size = tuple(latents.shape[-2:])
            self.store.maps.clear()
        fused = batch["reference"] if trains_fusion else reference.features
        prediction = parts(noisy, timesteps, text, batch["face_token"], fused)
        if models.noise_scheduler.config.prediction_type == "v_prediction":
            target = models.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        zero = prediction.new_zeros(()).float()
        losses = {"noise": noise_loss(prediction, target, batch["face_mask"], batch["masked_noise"])}
        losses["localization"] = zero
        if self.store is not None and self.store.maps:
            sizes = {name: self.store.resolution(maps.shape[1]) for name, maps in self.store.maps.items()}
            losses["localization"] = localization_loss(
                self.store.maps, batch["face_mask"], sizes, config.beta, config.gamma, config.lam, config.mu
            )
        losses["identity"] = zero
        applies = (timesteps <= config.identity_timestep_max) & (batch["face_token"] >= 0)
        if config.identity_weight > 0 and applies.any():
            estimate = one_step_reverse(
                noisy[applies],
                prediction[applies],
                self.alphas_cumprod[timesteps[applies].cpu()],
                models.noise_scheduler.config.prediction_type,
            )
            generated = decoded_face_embedding(
                models.vae, models.loss_encoder, estimate.to(self.dtype), batch["landmarks"][applies]
            )
            losses["identity"] = identity_loss(generated, reference_identity[applies], latents.shape[0])
        losses["total"] = (
            config.noise_weight * losses["noise"]
            + config.identity_weight * losses["identity"]
            + config.localization_weight * losses["localization"]
        )
        return losses


@dataclass
class Session:
    """Everything a training run steps: models on their devices, optimizer, LR schedule, objective."""

    accelerator: Accelerator
    config: TrainConfig
    models: Models
    parts: torch.nn.Module  # the TrainedParts as prepared: wrapped by DDP or DeepSpeed when the launch is
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    store: AttentionStore | None
    dtype: torch.dtype
    objective: Objective
    start_step: int = 0

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser changes: everything trained, but a LoRA-trained UNet's frozen base."""
        return trainable_parameters(self.parts)

    def weights(self) -> dict[str, torch.nn.Module]:
        """What training changed, unwrapped and named as in a PortraitBooth weights folder."""
        return self.accelerator.unwrap_model(self.parts).weights()

    @classmethod
    def start(
        cls, config: TrainConfig, accelerator: Accelerator, output: Path | None = None, resume: str | None = None
    ) -> "Session":
        """Frozen VAE, text encoder and φ in the mixed-precision dtype; UNet (or its LoRA) and STEA trainable;
        resumed if asked."""
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        optimizer_class = adamw_class(config, accelerator.device)  # said before any model is loaded
        set_tf32(config.allow_tf32, accelerator.device)
        models = build_models(config)
        fusion = models.fusion_encoder.train() if config.train_fusion_encoder else None
        for frozen in {models.vae, models.text_encoder, models.fusion_encoder, models.loss_encoder} - {fusion}:
            frozen.requires_grad_(False).eval().to(accelerator.device)
            if dtype != torch.float32:
                frozen.to(dtype)
        unet, stea = models.unet.train(), models.stea.train()
        if config.lora_rank:
            add_unet_lora(unet, config, dtype)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            models.vae.enable_gradient_checkpointing()  # the DIP decode keeps its graph
        store = install_attention_capture(unet, config.ecac_layers) if config.localization_weight > 0 else None
        parts = TrainedParts(unet, stea, fusion)
        optimizer = optimizer_class(
            trainable_parameters(parts),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
            **({} if config.use_8bit_adam else {"foreach": True}),  # one kernel per step for all tensors
        )
        lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=config.lr_warmup_steps)
        fit_deepspeed(accelerator, config)
        parts, optimizer, lr_scheduler = accelerator.prepare(parts, optimizer, lr_scheduler)
        register_model_hooks(accelerator)
        start_step = 0
        resume_from = resolve_resume(output, resume) if output is not None else None
        if resume_from is not None:
            start_step = load_checkpoint(accelerator, resume_from)
            logger.info("Resumed from %s at step %d", resume_from, start_step)
        objective = Objective(models, config, store, dtype)
        return cls(accelerator, config, models, parts, optimizer, lr_scheduler, store, dtype, objective, start_step)

    def step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One optimiser step on `batch`; its random draws depend only on (seed, step, rank)."""
        accelerator = self.accelerator
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        generator = step_generator(self.config.seed, step, accelerator.process_index, accelerator.device)
        with accelerator.autocast():
            losses = self.objective(self.parts, batch, generator)
        accelerator.backward(losses["total"])
        accelerator.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return losses


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """Every random draw of a step comes from here, so a resumed run repeats it exactly."""
    return torch.Generator(device=device).manual_seed(
        int(np.random.SeedSequence((seed, step, rank)).generate_state(1)[0])
    )


def validate(
    models: Models, weights: dict, dataset: PortraitDataset, config: TrainConfig, folder: Path, device
) -> list:
    """Fixed faces (the first references of the set) × the recipe's validation prompts, with the
    trained `weights` (unet, stea and, when trained, fusion_encoder) in the base pipeline."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(models.base_scheduler_config)
    pipe = models.pipeline.with_modules(**{"fusion_encoder": models.fusion_encoder, **weights, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index, sample in enumerate(dataset.samples[:2]):
        reference = dataset[Draw(index, 0)]["reference"][None].to(device, pipe.fusion_encoder.dtype)
        with torch.no_grad():
            identity = pipe.fusion_encoder(reference)
        face = FaceEncoding(identity.features, identity.embedding)
        word = dataset.word_map.get(sample.identity_word, sample.identity_word)
        for number, template in enumerate(config.validation_prompts):
            image = pipe(
                template.format(word=word),
                face=face,
                identity_word=word,
                num_inference_steps=config.validation_steps,
                height=config.resolution,
                width=config.resolution,
                generator=torch.Generator().manual_seed(number),
            ).images[0]
            write_png(folder / f"face{index}-prompt{number}.png", image)
            images.append(np.asarray(image))
    return images


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = TrainConfig.load(
        args.config,
        max_steps=args.max_steps,
        base=args.base,
        identity_checkpoint=args.identity_checkpoint,
        seed=args.seed,
    )
    return train(config, args.data, args.output_dir, args.resume)


def train(config: TrainConfig, data: Path, output: Path, resume: str | None = None) -> Path:
    """Train on the prepared set `data` into `output`; returns the final weights' folder."""
    samples = training_samples(data)  # a missing or empty set is said now, before any model is loaded
    check_deepspeed()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
    )
    session = Session.start(config, accelerator, output, resume)
    models, store, device = session.models, session.store, accelerator.device
    lr_scheduler = session.lr_scheduler
    start_step = session.start_step
    dataset = PortraitDataset(data, models.tokenizer, config, samples)
    sampler = StepBatchSampler(
        len(dataset), config.batch_size, config.seed, start_step, config.max_steps, accelerator.process_index
    )
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=config.num_workers)
    accelerator.init_trackers("portraitbooth", config={k: str(v) for k, v in config.to_dict().items()})
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        write_text(output / "config.json", json.dumps(config.to_dict(), indent=1))
    shown = {} if accelerator.is_local_main_process else {"disable": True}  # else tqdm's own default ($TQDM_DISABLE)
    progress = tqdm(total=config.max_steps, initial=start_step, desc="training", **shown)
    for step, batch in zip(range(start_step, config.max_steps), loader):
        started = time.perf_counter()
        losses = session.step(batch, step)
        done = step + 1
        progress.update(1)
        if done % config.log_every == 0 or done == config.max_steps:
            values = {f"loss/{name}": float(value.detach()) for name, value in losses.items()}
            values.update({"lr": lr_scheduler.get_last_lr()[0], "step_seconds": time.perf_counter() - started})
            if torch.cuda.is_available():
                values["gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            accelerator.log(values, step=done)
            progress.set_postfix(loss=f"{values['loss/total']:.4f}")
        if done % config.checkpoint_every == 0 or done == config.max_steps:
            save_checkpoint(accelerator, output, done, config.keep_checkpoints)  # every process: DeepSpeed's shards
        if accelerator.is_main_process and config.validation_every and done % config.validation_every == 0:
            if store is not None:
                store.token_indices = None  # plain SDPA while sampling
            with accelerator.autocast():  # fp32 trained modules beside bf16/fp16 frozen ones
                folder = output / "validation" / f"step-{done:06d}"
                images = validate(models, session.weights(), dataset, config, folder, device)
            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_images("validation", np.stack(images), done, dataformats="NHWC")
            session.parts.train()
    progress.close()
    accelerator.wait_for_everyone()
    restore_fp32_weights(accelerator, session.parts)
    final = output / "final"
    if accelerator.is_main_process:
        save_final_weights(final, session.weights())
        logger.info("Weights written to %s (load with portrait_weights=%s)", final, final)
    accelerator.end_training()
    return final


if __name__ == "__main__":
    sys.exit(run_command(main, prog="python -m train.train"))
