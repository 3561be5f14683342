"""Fine-tune a Stable Diffusion UNet on image/caption pairs: fully (optionally with EMA) or LoRA.

:func:`train` runs a :class:`~training.config.TrainConfig` in numbered steps – Accelerator →
load and freeze → (LoRA) → data → prepare → resume → the loop with
``accumulate``/``sync_gradients`` → main-process checkpoints, validation and the final save.
The objective – one micro-batch's loss – is written out in step 7; the steps it shares with
Diffusion-DPO (training/dpo.py) are in training/accelerated.py, what a run is asked (config,
presets, checks) in training/config.py, the loss's maths in training/objective.py, and what a
run leaves behind (checkpoints, renders, the saved model, the report) in training/outputs.py.

Runs unchanged on one CPU, one GPU, or many GPUs/nodes under ``accelerate launch -m training``:
everything distributed goes through the :class:`accelerate.Accelerator`.

Determinism: the data order, crops and flips come from ``(seed, epoch, index)`` (see
:mod:`training.data`) and every micro-batch's noise, timesteps and latent samples from a
generator seeded by ``(seed, micro-batch, process)``. Nothing depends on global RNG state after
the model is built, so a run resumed from a checkpoint ends with the same weights as one that
was never interrupted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from training.accelerated import (
    encode_prompts,
    frozen_by_rounding,
    load_base,
    make_lr_scheduler,
    make_optimizer,
    make_trainable,
    rendered_at,
    resolve_sd,
    run_loop,
    save_trained,
    start_run,
    validate,
    write_report,
    write_settings,
)
from training.config import TENSORBOARD_HINT, TrainConfig, check_config, default_cache_dir
from training.objective import min_snr_weights, prediction_target, signal_to_noise
from training.outputs import (
    TrainResult,
    build_report,
    checkpoint_only_lora,
    find_checkpoint,
    flat_hyperparameters,
    require,
    resume_state,
)

log = logging.getLogger(__name__)

# -- the run -----------------------------------------------------------------------------------


def train(config: TrainConfig) -> TrainResult:
    """Run ``config`` to the end and save the result; see the module docstring."""
    check_config(config)
    from training.data import CaptionedImages, EpochShuffle, collate, load_examples

    # 0. Cheap checks first: the data and the model name, before minutes of loading.
    examples = load_examples(
        config.data,
        image_column=config.image_column,
        caption_column=config.caption_column,
        split=config.split,
    )
    spec = resolve_sd(config.base)
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import EMAModel

    out = Path(config.out).expanduser()
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    checkpoint = find_checkpoint(out, config.resume) if config.resume else None
    tensorboard = config.report_to == "tensorboard"

    # 1. The Accelerator: devices, processes, mixed precision, accumulation, trackers.
    if tensorboard:
        require("tensorboard", TENSORBOARD_HINT, "--report-to tensorboard")
    run = start_run(
        out=out,
        mixed_precision=config.mixed_precision,
        accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed,
        checkpoint=checkpoint,
        tensorboard=tensorboard,
    )
    accelerator, seed, weight_dtype = run.accelerator, run.seed, run.weight_dtype
    device = accelerator.device

    # 2. The base model through the registry, then freeze what is not trained.
    base = load_base(
        spec,
        run,
        cache_dir=cache_dir,
        allow_downloads=config.allow_downloads,
        train_text_encoder=config.train_text_encoder,
    )
    unet, vae, text_encoder = base.unet, base.vae, base.text_encoder
    noise_scheduler = base.noise_scheduler

    # 3. What trains: every UNet weight, or LoRA adapters on its attention projections; the text
    #    encoder too with --train-text-encoder; an EMA of it all with --use-ema.
    make_trainable(unet, config, run)
    if config.train_text_encoder:
        text_encoder.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    params += [p for p in text_encoder.parameters() if p.requires_grad]
    ema = EMAModel(params, decay=config.ema_decay) if config.use_ema else None
    if ema is not None:
        ema.to(device)
    optimizer = make_optimizer(params, config, eight_bit=config.use_8bit_adam)

    # 4. Data: deterministic order and augmentation (training/data.py).
    dataset = CaptionedImages(
        examples,
        resolution=config.resolution,
        center_crop=config.center_crop,
        random_flip=config.random_flip,
        seed=seed,
    )
    sampler = EpochShuffle(len(dataset), seed)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.train_batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.dataloader_num_workers,
    )

    # 5. Prepare: accelerate shards the batches across processes and wraps the model.
    unet, optimizer, dataloader = accelerator.prepare(unet, optimizer, dataloader)
    if config.train_text_encoder:
        text_encoder = accelerator.prepare(text_encoder)
    max_steps = config.max_train_steps or math.ceil(
        config.num_train_epochs * len(dataloader) / config.gradient_accumulation_steps
    )
    lr_scheduler = make_lr_scheduler(accelerator, optimizer, config, max_steps)
    if accelerator.is_main_process and (
        warning := frozen_by_rounding(config.learning_rate, max_steps, params)
    ):
        log.warning(warning)  # once, before any time is spent (seed000's lr 1e-10, say)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if config.method == "lora":
        checkpoint_only_lora(accelerator)
    settings = {**dataclasses.asdict(config), "seed": seed, "mixed_precision": run.mixed_precision}
    write_settings(accelerator, out, settings)
    if tensorboard and accelerator.is_main_process:
        accelerator.init_trackers("playlist-cover", config=flat_hyperparameters(settings))

    # 6. Resume: weights, optimizer, scheduler, EMA and the step count; the data position follows.
    start_step = resume_state(accelerator, checkpoint, resume=config.resume, out=out)

    # 7. The objective, one micro-batch: noise the latents at a random step and regress the
    #    scheduler's target (ε or v) – plain MSE, or Min-SNR weighted with --snr-gamma.
    def micro_batch_loss(batch: dict[str, Any], generator: Any) -> tuple[Any, dict[str, Any]]:
        with torch.no_grad():
            pixels = batch["pixel_values"].to(device, dtype=weight_dtype)  # (B, 3, R, R)
            latents = vae.encode(pixels).latent_dist.sample(generator=generator)
            latents = latents * vae.config.scaling_factor  # (B, 4, R/8, R/8)
            captions = batch["captions"]
            if config.proportion_empty_prompts:
                drop = torch.rand(len(captions), generator=generator, device=device)
                captions = [
                    "" if d < config.proportion_empty_prompts else c
                    for c, d in zip(captions, drop.tolist(), strict=True)
                ]
        with torch.set_grad_enabled(config.train_text_encoder):
            text = encode_prompts(base, text_encoder, captions, device)  # (B, 77, D)
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        if config.noise_offset:
            # Shifts each channel's mean so the model also learns to change overall
            # brightness (Guttenberg 2023, "Diffusion with Offset Noise").
            noise = noise + config.noise_offset * torch.randn(
                (*latents.shape[:2], 1, 1),
                generator=generator,
                device=device,
                dtype=latents.dtype,
            )
        timesteps = torch.randint(
            0,
            noise_scheduler.config.num_train_timesteps,
            (latents.shape[0],),
            generator=generator,
            device=device,
        )  # (B,)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = prediction_target(noise_scheduler, latents, noise, timesteps)
        prediction = unet(noisy, timesteps, text, return_dict=False)[0]  # (B, 4, h, w)
        if config.snr_gamma is None:
            return F.mse_loss(prediction.float(), target.float(), reduction="mean"), {}
        snr = signal_to_noise(noise_scheduler.alphas_cumprod, timesteps)
        weights = min_snr_weights(snr, config.snr_gamma, noise_scheduler.config.prediction_type)
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none")
        return (per_sample.mean(dim=(1, 2, 3)) * weights).mean(), {}

    def validate_now(step: int) -> None:
        validate(
            run,
            base,
            config,
            unet=unet,
            text_encoder=text_encoder,
            params=params,
            out=out,
            step=step,
            ema=ema,
            tensorboard=tensorboard,
        )

    # 8. The loop (training/accelerated.py): accumulate, clip, step; after each optimizer step
    #    the EMA, the logs, checkpoints and validation renders.
    state = run_loop(
        run,
        config,
        unet=unet,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        dataloader=dataloader,
        sampler=sampler,
        dataset=dataset,
        params=params,
        micro_batch_loss=micro_batch_loss,
        validate=validate_now,
        out=out,
        start_step=start_step,
        max_steps=max_steps,
        ema=ema,
        advice="lower --learning-rate or use --mixed-precision bf16/no",
    )

    # 9. Save what the bot loads: EMA weights when kept, as a diffusers folder or a LoRA file.
    accelerator.wait_for_everyone()
    if ema is not None:
        ema.copy_to(params)  # from here on the model holds the EMA weights
    if not rendered_at(state.step, config):
        validate_now(state.step)  # the final weights' images, unless the last step rendered them
    trained_text = accelerator.unwrap_model(text_encoder) if config.train_text_encoder else None
    output = save_trained(
        run, base, config, unet=unet, out=out, cache_dir=cache_dir, text_encoder=trained_text
    )
    report = build_report(
        config,
        accelerator,
        state.step_times,
        state.loss,
        state.step,
        output,
        seed,
        run.mixed_precision,
    )
    write_report(accelerator, out, report)
    accelerator.end_training()
    return TrainResult(output=output, report=report, out_dir=out)
