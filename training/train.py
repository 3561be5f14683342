"""Fine-tune a Stable Diffusion UNet on image/caption pairs: fully (optionally with EMA) or LoRA.

:func:`train` runs a :class:`~training.config.TrainConfig` in numbered steps – Accelerator →
load and freeze → (LoRA) → data → prepare → resume → the loop with
``accumulate``/``sync_gradients`` → main-process checkpoints, validation and the final save.
What a run is asked (config, presets, checks) is in training/config.py, the loss's maths in
training/objective.py, and what a run leaves behind (checkpoints, renders, the saved model, the
report) in training/outputs.py.

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
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from training.accelerated import add_lora, frozen_by_rounding, start_run
from training.config import (
    BNB_HINT,
    REPORT_FILE,
    TENSORBOARD_HINT,
    TrainConfig,
    TrainingError,
    check_config,
    default_cache_dir,
)
from training.objective import min_snr_weights, prediction_target, signal_to_noise, step_seed
from training.outputs import (
    TrainResult,
    build_report,
    checkpoint_only_lora,
    find_checkpoint,
    flat_hyperparameters,
    render_validation,
    require,
    resume_state,
    save_checkpoint,
    save_full,
    save_lora,
    save_samples,
)

log = logging.getLogger(__name__)

# -- the run -----------------------------------------------------------------------------------


def train(config: TrainConfig) -> TrainResult:
    """Run ``config`` to the end and save the result; see the module docstring."""
    check_config(config)
    from models.registry import load_pipeline, resolve_model
    from training.data import CaptionedImages, EpochShuffle, collate, load_examples

    # 0. Cheap checks first: the data and the model name, before minutes of loading.
    examples = load_examples(
        config.data,
        image_column=config.image_column,
        caption_column=config.caption_column,
        split=config.split,
    )
    spec = resolve_model(config.base)
    if spec.kind != "sd":
        raise TrainingError(
            f"--base {config.base!r} is not a Stable Diffusion model; it can't be fine-tuned here."
        )
    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate.utils import (
        set_seed,
    )
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    out = Path(config.out).expanduser()
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    checkpoint = find_checkpoint(out, config.resume) if config.resume else None

    # 1. The Accelerator: devices, processes, mixed precision, accumulation, trackers.
    if config.report_to == "tensorboard":
        require("tensorboard", TENSORBOARD_HINT, "--report-to tensorboard")
    run = start_run(
        out=out,
        mixed_precision=config.mixed_precision,
        accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed,
        checkpoint=checkpoint,
        tensorboard=config.report_to == "tensorboard",
    )
    accelerator, seed, weight_dtype = run.accelerator, run.seed, run.weight_dtype
    mixed_precision = run.mixed_precision
    device = accelerator.device

    # 2. The base model through the registry (float32 on the CPU first: trained weights must be
    #    float32 whatever the model's inference dtype), then freeze what is not trained.
    pipe = load_pipeline(
        spec, device="cpu", cache_dir=cache_dir, allow_downloads=config.allow_downloads
    )
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    vae.requires_grad_(False)
    vae.to(device, dtype=weight_dtype)
    text_encoder.requires_grad_(config.train_text_encoder)
    # A trained text encoder keeps float32 weights, like the UNet.
    text_encoder.to(device, dtype=torch.float32 if config.train_text_encoder else weight_dtype)

    # 3. What trains: every UNet weight, or LoRA adapters on its attention projections.
    set_seed(seed)  # global RNG is used only from here to the adapters' init; see the docstring
    if config.method == "lora":
        unet.requires_grad_(False)
        unet.to(device, dtype=weight_dtype)  # the frozen base may run in half precision
        add_lora(unet, rank=config.lora_rank, alpha=config.lora_alpha, layers=config.lora_layers)
    else:
        unet.requires_grad_(True)
    unet.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.train_text_encoder:
        text_encoder.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    params += [p for p in text_encoder.parameters() if p.requires_grad]
    ema = EMAModel(params, decay=config.ema_decay) if config.use_ema else None
    if ema is not None:
        ema.to(device)

    if config.use_8bit_adam:
        bnb = require("bitsandbytes", BNB_HINT, "--use-8bit-adam")
        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    optimizer = optimizer_class(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )

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
    batches_per_epoch = len(dataloader)  # per process, after sharding
    max_steps = config.max_train_steps or math.ceil(
        config.num_train_epochs * batches_per_epoch / config.gradient_accumulation_steps
    )
    # The prepared scheduler steps once per process per optimizer step (diffusers does the same).
    lr_scheduler = accelerator.prepare(
        get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=max_steps * accelerator.num_processes,
        )
    )
    if accelerator.is_main_process and (
        warning := frozen_by_rounding(config.learning_rate, max_steps, params)
    ):
        log.warning(warning)  # once, before any time is spent (seed000's lr 1e-10, say)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if config.method == "lora":
        checkpoint_only_lora(accelerator)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        settings = {**dataclasses.asdict(config), "seed": seed, "mixed_precision": mixed_precision}
        (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        if config.report_to == "tensorboard":
            accelerator.init_trackers("playlist-cover", config=flat_hyperparameters(settings))

    # 6. Resume: weights, optimizer, scheduler, EMA and the step count; the data position follows.
    global_step = resume_state(accelerator, checkpoint, resume=config.resume, out=out)

    def encode_prompts(captions: list[str]) -> Any:
        ids = tokenizer(
            captions,
            max_length=tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)  # (B, 77)
        return text_encoder(ids, return_dict=False)[0]  # (B, 77, D)

    def checkpoint_now() -> None:
        save_checkpoint(
            accelerator, out, step=global_step, seed=seed, keep=config.checkpoints_total_limit
        )

    def validate() -> None:
        if not config.validation_prompts or not accelerator.is_main_process:
            return
        images = render_validation(
            accelerator.unwrap_model(unet), vae, accelerator.unwrap_model(text_encoder),
            tokenizer, pipe.scheduler,
            prompts=config.validation_prompts, resolution=config.resolution,
            steps=config.validation_inference_steps, seed=seed, ema=ema, params=params,
            accelerator=accelerator,
        )  # fmt: skip
        save_samples(images, out, global_step)
        if config.report_to == "tensorboard":
            stacked = np.stack([np.asarray(image) for image in images])  # (N, H, W, 3)
            writer = accelerator.get_tracker("tensorboard").writer
            writer.add_images("validation", stacked, global_step, dataformats="NHWC")

    # 7. The loop. One optimizer step = gradient_accumulation_steps micro-batches.
    micro_step = global_step * config.gradient_accumulation_steps
    epoch = micro_step // batches_per_epoch
    progress = tqdm(
        total=max_steps,
        initial=global_step,
        desc="steps",
        disable=not accelerator.is_local_main_process,
    )
    step_times: list[float] = []
    step_loss = 0.0
    last_loss = float("nan")
    step_started = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while global_step < max_steps:
        sampler.use_epoch(epoch)
        dataset.use_epoch(epoch)
        skip = micro_step - epoch * batches_per_epoch  # > 0 only in the epoch a resume lands in
        batches = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch in batches:
            with accelerator.accumulate(unet):
                generator = torch.Generator(device).manual_seed(
                    step_seed(seed, micro_step, accelerator.process_index)
                )
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
                    text = encode_prompts(captions)  # (B, 77, D)
                noise = torch.randn(
                    latents.shape, generator=generator, device=device, dtype=latents.dtype
                )
                if config.noise_offset:
                    # Shifts each channel's mean so the model also learns to change overall
                    # brightness (Guttenberg 2023, "Diffusion with Offset Noise").
                    noise = noise + config.noise_offset * torch.randn(
                        (*latents.shape[:2], 1, 1), generator=generator, device=device,
                        dtype=latents.dtype,
                    )  # fmt: skip
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
                    loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
                else:
                    snr = signal_to_noise(noise_scheduler.alphas_cumprod, timesteps)
                    weights = min_snr_weights(
                        snr, config.snr_gamma, noise_scheduler.config.prediction_type
                    )
                    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none")
                    loss = (per_sample.mean(dim=(1, 2, 3)) * weights).mean()
                # The mean over all processes, for the log only (the backward uses our own loss).
                gathered = accelerator.gather(loss.detach().repeat(latents.shape[0]))
                step_loss += gathered.mean().item() / config.gradient_accumulation_steps
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            if not accelerator.sync_gradients:
                continue

            # 8. After each optimizer step: EMA, logs, and the main process's extra work.
            if ema is not None:
                ema.step(params)
            global_step += 1
            step_times.append(time.perf_counter() - step_started)
            last_loss, step_loss = step_loss, 0.0
            if not math.isfinite(last_loss):
                raise TrainingError(
                    f"The loss became {last_loss} at step {global_step}; lower --learning-rate "
                    "or use --mixed-precision bf16/no."
                )
            lr = lr_scheduler.get_last_lr()[0]
            progress.update(1)
            progress.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            accelerator.log({"train_loss": last_loss, "lr": lr}, step=global_step)
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0:
                checkpoint_now()
            if config.validation_steps and global_step % config.validation_steps == 0:
                validate()
            step_started = time.perf_counter()  # checkpoints and validation are not step time
            if global_step >= max_steps:
                break
        epoch += 1
    progress.close()

    # 9. Save what the bot loads: EMA weights when kept, as a diffusers folder or a LoRA file.
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.copy_to(params)  # from here on the model holds the EMA weights
    if config.validation_prompts and (
        not config.validation_steps or global_step % config.validation_steps
    ):
        validate()  # the final weights' images, unless the last step just rendered them
    output = out / ("lora" if config.method == "lora" else "model")
    if accelerator.is_main_process:
        if config.method == "lora":
            output = save_lora(trained, output)
        else:
            trained_text = (
                accelerator.unwrap_model(text_encoder) if config.train_text_encoder else None
            )
            save_full(trained, trained_text, spec, output, cache_dir, config)
    report = build_report(
        config, accelerator, step_times, last_loss, global_step, output, seed, mixed_precision
    )
    if accelerator.is_main_process:
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    accelerator.end_training()
    return TrainResult(output=output, report=report, out_dir=out)
