"""Diffusion-DPO: preference fine-tuning from a server's votes (``python -m training dpo``).

Wallace et al., 2023, "Diffusion Model Alignment Using Direct Preference Optimization": for a
prompt c with a preferred image x_w and a rejected one x_l, noise both with the *same* noise ε
at the *same* step t and compare how much better the trained model denoises them than a frozen
reference model does (their eq. 14, with the constant T·ω(λ_t) folded into β as their code does):

    e_w = ‖target_w − f_θ(x_w,t, t, c)‖² − ‖target_w − f_ref(x_w,t, t, c)‖²
    e_l = ‖target_l − f_θ(x_l,t, t, c)‖² − ‖target_l − f_ref(x_l,t, t, c)‖²
    L   = −log σ(−β/2 · (e_w − e_l))

with ‖·‖² the mean over latent elements and target the scheduler's prediction target (ε, or
the velocity for v-prediction; training/objective.py ``prediction_target``). The loss falls when
the model's error drops on the winner more than on the loser, measured against the reference,
so it learns what separates winners from losers without drifting from the base elsewhere (the
reference term is DPO's KL anchor; β sets how hard).

**Diffusion-KTO** (``python -m training kto``; Li et al., 2024, "Aligning Diffusion Models by
Optimizing Human Utility") learns from single images marked liked or disliked – which is what
reactions on four candidates are: every candidate with a vote is liked, every one without a vote
in a closed vote disliked. With the same implied reward as DPO, r = −β/2 · (e_θ − e_ref) on one
image, and a reference point z₀ = max(0, batch mean of r), detached (KTO's estimate of the
policy's divergence from the reference, Ethayarajh et al. 2024):

    L = mean of  λ_D · (1 − σ(r − z₀))  over liked images,  λ_U · (1 − σ(z₀ − r))  over disliked

with λ_U = (liked images / disliked images) so that the two sides weigh alike however unequal
their numbers (KTO's advice: λ_D·n_D ≈ λ_U·n_U). It reads the same export-pairs folder: the
pairs file names every voted candidate and its votes.

Reads top to bottom like training/train.py, whose steps it shares (training/accelerated.py:
the Accelerator, loading, the loop with its checkpoints and renders, saving): typed config →
Accelerator → load and freeze → LoRA (default) or full → pairs (training/preferences.py) →
prepare → resume → the objective → the loop → save. The reference model is the base itself:
with LoRA the adapters are switched off for its forward pass (no second copy of the UNet), with
a full fine-tune a frozen copy is kept. Determinism is train.py's: data order and flips from
``(seed, epoch, index)``, each micro-batch's noise, steps and latent samples from
``step_seed(seed, micro-batch, process)``, so a resumed run ends with the weights of an
uninterrupted one (tests/training/test_dpo.py).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from training.accelerated import (
    encode_prompts,
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
from training.config import (
    Method,
    Precision,
    TrainingError,
    default_cache_dir,
    option,
)
from training.objective import prediction_target
from training.outputs import (
    TrainResult,
    build_report,
    checkpoint_only_lora,
    find_checkpoint,
    resume_state,
)
from training.preferences import (
    LabelledImages,
    PreferencePairs,
    collate_labelled,
    collate_pairs,
    load_labelled,
    load_pairs,
)

log = logging.getLogger(__name__)


@dataclass
class DPOConfig:
    """Every knob of a DPO run. Defaults: LoRA (small, one per server) with Wallace et al.'s
    β = 5000 (their SD 1.5 value); the miniature (training/dpo_miniature.py) sets its own."""

    # --- what to train, on what, into where ---
    data: str = option("pairs folder written by 'python -m training export-pairs'", default="")
    base: str = option(
        "base model (also the frozen reference): a registry preset or a diffusers folder",
        default="embedded",
    )
    out: str = option(
        "output folder: lora/ or model/, checkpoints/, samples/, the report", default="runs/dpo"
    )
    method: Method = option(  # noqa: RUF009  (option is dataclasses.field)
        "lora: low-rank adapters on the UNet's attention (default); full: every UNet weight",
        default="lora",
    )
    objective: Literal["dpo", "kto"] = option(
        "dpo: preference pairs (Wallace et al. 2023); kto: each voted candidate liked, each "
        "unvoted one disliked (Diffusion-KTO, Li et al. 2024)",
        default="dpo",
    )
    beta: float = option(
        "β: how strongly preferences pull against the reference (Wallace et al. used 5000 "
        "for SD 1.5; larger stays closer to the base)",
        default=5000.0,
    )
    min_margin: int = option("use only pairs whose vote margin is at least this", default=1)
    # --- images ---
    resolution: int = option("training resolution in px (square)", default=512)
    random_flip: bool = option(
        "flip half the pairs horizontally (both images alike)", default=False
    )
    # --- optimisation ---
    train_batch_size: int = option("pairs per device per micro-batch", default=4)
    gradient_accumulation_steps: int = option("micro-batches per optimizer step", default=1)
    max_train_steps: int = option("optimizer steps", default=500)
    learning_rate: float = option("AdamW learning rate", default=1e-4)
    lr_scheduler: str = option(
        "diffusers scheduler: constant, linear, cosine, ...", default="constant"
    )
    lr_warmup_steps: int = option("warm-up steps (ignored by the constant scheduler)", default=0)
    max_grad_norm: float = option("gradient clipping norm (0: no clipping)", default=1.0)
    adam_beta1: float = option("AdamW beta1", default=0.9)
    adam_beta2: float = option("AdamW beta2", default=0.999)
    adam_weight_decay: float = option("AdamW weight decay", default=1e-2)
    adam_epsilon: float = option("AdamW epsilon", default=1e-8)
    # --- memory and speed ---
    mixed_precision: Precision = option(  # noqa: RUF009  (option is dataclasses.field)
        "no, fp16 or bf16 (fp16 needs a GPU; on a CPU it falls back to no)", default="no"
    )
    gradient_checkpointing: bool = option(
        "recompute activations in the backward pass", default=False
    )
    # --- LoRA ---
    lora_rank: int = option("LoRA rank r", default=8)
    lora_alpha: float | None = option("LoRA alpha (default: the rank)", default=None)
    lora_layers: Literal["attention", "cross-attention"] = option(
        "attention: q/k/v/out of every attention block; cross-attention: the text ones only",
        default="attention",
    )
    # --- validation, checkpoints ---
    validation_prompts: list[str] = option(  # noqa: RUF009  (option is dataclasses.field)
        "prompts rendered every validation_steps and at the end", default_factory=list
    )
    validation_steps: int = option(
        "render the validation prompts every N steps (0: at the end)", default=0
    )
    validation_inference_steps: int = option("denoising steps of a validation image", default=20)
    checkpointing_steps: int = option(
        "save a resumable checkpoint every N steps (0: never)", default=100
    )
    checkpoints_total_limit: int | None = option("keep at most this many checkpoints", default=None)
    resume: str | None = option("'latest' or a checkpoint folder to continue from", default=None)
    seed: int | None = option(
        "seed for data order, noise and LoRA init (default: random)", default=None
    )
    cache_dir: str | None = option("project cache (embedded model)", default=None)
    allow_downloads: bool = option("let a hub base model be downloaded", default=False)


def check_config(config: DPOConfig) -> None:
    """Raise :class:`TrainingError` naming the option and its value when a run cannot work."""
    if not config.data:
        raise TrainingError("--data is required: a folder from 'python -m training export-pairs'.")
    for name in (
        "resolution",
        "train_batch_size",
        "gradient_accumulation_steps",
        "lora_rank",
        "max_train_steps",
        "validation_inference_steps",
        "min_margin",
    ):
        if getattr(config, name) < 1:
            raise TrainingError(f"--{_flag(name)} must be at least 1, got {getattr(config, name)}.")
    if config.resolution % 8:
        raise TrainingError(f"--resolution must be a multiple of 8, got {config.resolution}.")
    if not config.beta > 0:
        raise TrainingError(f"--beta must be positive, got {config.beta}.")
    if config.learning_rate <= 0:
        raise TrainingError(f"--learning-rate must be positive, got {config.learning_rate}.")
    for name in ("validation_steps", "checkpointing_steps", "lr_warmup_steps"):
        if getattr(config, name) < 0:
            raise TrainingError(f"--{_flag(name)} must be 0 or more, got {getattr(config, name)}.")
    if config.checkpoints_total_limit is not None and config.checkpoints_total_limit < 1:
        raise TrainingError(
            f"--checkpoints-total-limit must be at least 1, got {config.checkpoints_total_limit}."
        )


def _flag(name: str) -> str:
    return name.replace("_", "-")


# -- pure maths --------------------------------------------------------------------------------


def denoising_errors(prediction: Any, target: Any) -> Any:
    """‖target − prediction‖² as the mean over every element but the batch's: (B, ...) → (B,)."""
    squared = (prediction.float() - target.float()) ** 2
    return squared.reshape(squared.shape[0], -1).mean(dim=1)


def diffusion_dpo_loss(
    model_w: Any, model_l: Any, ref_w: Any, ref_l: Any, beta: float
) -> tuple[Any, Any]:
    """The Diffusion-DPO loss (module docstring; Wallace et al. 2023, eq. 14) from per-pair
    denoising errors (B,) of the trained model and the reference on winner and loser:

        L = mean over pairs of −log σ(−β/2 · ((model_w − ref_w) − (model_l − ref_l)))

    Returns (the loss, the share of pairs the model already ranks right: inside term > 0)."""
    import torch.nn.functional as F

    inside = -0.5 * beta * ((model_w - ref_w) - (model_l - ref_l))  # (B,)
    return -F.logsigmoid(inside).mean(), (inside > 0).float().mean()


def diffusion_kto_loss(
    model: Any, ref: Any, liked: Any, beta: float, undesirable_weight: float
) -> tuple[Any, Any]:
    """The Diffusion-KTO loss (module docstring) from per-image denoising errors (B,) of the
    trained model and the reference, and ``liked`` (B,) booleans. Returns (the loss, the share
    of images already on their side of the reference point)."""
    import torch

    reward = -0.5 * beta * (model - ref)  # (B,): > 0 where the model denoises better than ref
    reference_point = reward.mean().clamp(min=0).detach()
    margin = torch.where(liked, reward - reference_point, reference_point - reward)
    weights = torch.where(
        liked, torch.ones_like(reward), torch.full_like(reward, undesirable_weight)
    )
    loss = (weights * (1.0 - torch.sigmoid(margin))).mean()
    return loss, (margin > 0).float().mean()


# -- the run -----------------------------------------------------------------------------------


def train_dpo(config: DPOConfig) -> TrainResult:
    """Run ``config`` to the end and save the LoRA (or model); see the module docstring."""
    check_config(config)
    from training.data import EpochShuffle

    # 0. Cheap checks first: the pairs (or labelled images) and the model name, before minutes
    #    of loading.
    kto = config.objective == "kto"
    pairs = load_pairs(config.data, min_margin=config.min_margin)
    labelled = load_labelled(config.data, min_margin=config.min_margin) if kto else []
    liked = sum(item.liked for item in labelled)
    if kto and liked in (0, len(labelled)):
        raise TrainingError(
            f"KTO needs liked and disliked images; {config.data} has {liked} liked of "
            f"{len(labelled)}."
        )
    undesirable_weight = liked / (len(labelled) - liked) if kto else 1.0
    spec = resolve_sd(config.base)
    import torch

    out = Path(config.out).expanduser()
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    checkpoint = find_checkpoint(out, config.resume) if config.resume else None

    # 1. The Accelerator, as in training/train.py.
    run = start_run(
        out=out,
        mixed_precision=config.mixed_precision,
        accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed,
        checkpoint=checkpoint,
        tensorboard=False,
    )
    accelerator, seed, weight_dtype = run.accelerator, run.seed, run.weight_dtype
    device = accelerator.device

    # 2. The base model through the registry; VAE and text encoder frozen.
    base = load_base(
        spec,
        run,
        cache_dir=cache_dir,
        allow_downloads=config.allow_downloads,
        train_text_encoder=False,
    )
    unet, vae, text_encoder = base.unet, base.vae, base.text_encoder
    noise_scheduler = base.noise_scheduler

    # 3. What trains, and the reference: LoRA adapters over the frozen base (the reference is
    #    the same UNet with its adapters off), or every weight against a frozen copy.
    reference = None
    if config.method == "full":
        reference = copy.deepcopy(unet).requires_grad_(False).to(device, dtype=weight_dtype)
        reference.eval()
    make_trainable(unet, config, run)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)

    # 4. Pairs (or labelled images) in a deterministic order.
    dataset: Any
    if kto:
        dataset = LabelledImages(
            labelled, resolution=config.resolution, random_flip=config.random_flip, seed=seed
        )
    else:
        dataset = PreferencePairs(
            pairs, resolution=config.resolution, random_flip=config.random_flip, seed=seed
        )
    sampler = EpochShuffle(len(dataset), seed)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.train_batch_size,
        sampler=sampler,
        collate_fn=collate_labelled if kto else collate_pairs,
    )

    # 5. Prepare.
    unet, optimizer, dataloader = accelerator.prepare(unet, optimizer, dataloader)
    lr_scheduler = make_lr_scheduler(accelerator, optimizer, config, config.max_train_steps)
    if config.method == "lora":
        checkpoint_only_lora(accelerator)
    settings = {**dataclasses.asdict(config), "seed": seed, "mixed_precision": run.mixed_precision}
    write_settings(accelerator, out, {**settings, "pairs": len(pairs)})

    # 6. Resume: adapters (or weights), optimizer, scheduler and the step count.
    start_step = resume_state(accelerator, checkpoint, resume=config.resume, out=out)

    def reference_prediction(noisy: Any, timesteps: Any, text: Any) -> Any:
        if reference is not None:
            return reference(noisy, timesteps, text, return_dict=False)[0]
        base_unet = accelerator.unwrap_model(unet)
        base_unet.disable_adapters()  # the LoRA's base *is* the reference
        try:
            return base_unet(noisy, timesteps, text, return_dict=False)[0]
        finally:
            base_unet.enable_adapters()

    # 7. The objective, one micro-batch: the trained model's and the reference's denoising
    #    errors on the same noisy latents, into the DPO loss over pairs (winners, then losers)
    #    or the KTO loss over liked and disliked images.
    def micro_batch_loss(batch: dict[str, Any], generator: Any) -> tuple[Any, dict[str, Any]]:
        with torch.no_grad():
            if kto:
                pixels = batch["image"].to(device, weight_dtype)  # (B, 3, R, R)
                captions = batch["captions"]
            else:  # winners then losers: (2B, 3, R, R)
                pixels = torch.cat([batch["winner"], batch["loser"]]).to(device, weight_dtype)
                captions = batch["captions"] * 2
            latents = vae.encode(pixels).latent_dist.sample(generator=generator)
            latents = latents * vae.config.scaling_factor  # (N, 4, h, w)
            text = encode_prompts(base, text_encoder, captions, device)  # (N, 77, D)
        # DPO: the same noise and step for a winner and its loser (Wallace et al., §4);
        # KTO: each image its own.
        draws = latents.shape[0] if kto else latents.shape[0] // 2
        noise = torch.randn(
            latents[:draws].shape, generator=generator, device=device, dtype=latents.dtype
        )
        timesteps = torch.randint(
            0,
            noise_scheduler.config.num_train_timesteps,
            (draws,),
            generator=generator,
            device=device,
        )
        if not kto:
            noise, timesteps = noise.repeat(2, 1, 1, 1), timesteps.repeat(2)  # (2B, …)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = prediction_target(noise_scheduler, latents, noise, timesteps)
        prediction = unet(noisy, timesteps, text, return_dict=False)[0]  # (N, 4, h, w)
        with torch.no_grad():
            ref_errors = denoising_errors(reference_prediction(noisy, timesteps, text), target)
        model_errors = denoising_errors(prediction, target)  # (N,)
        if kto:
            loss, accuracy = diffusion_kto_loss(
                model_errors,
                ref_errors,
                batch["liked"].to(device),
                config.beta,
                undesirable_weight,
            )
        else:
            loss, accuracy = diffusion_dpo_loss(
                model_errors[:draws],
                model_errors[draws:],
                ref_errors[:draws],
                ref_errors[draws:],
                config.beta,
            )
        return loss, {"accuracy": accuracy}

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
        )

    # 8. The loop (training/accelerated.py): accumulate, clip, step; after each optimizer step
    #    the logs, checkpoints and validation renders.
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
        max_steps=config.max_train_steps,
        description=f"{config.objective} steps",
        loss_name=f"{config.objective.upper()} loss",
        advice="lower --learning-rate or --beta",
    )

    # 9. Save what /cover loads: a LoRA file (--lora) or a diffusers folder (--model).
    accelerator.wait_for_everyone()
    if not rendered_at(state.step, config):
        validate_now(state.step)
    output = save_trained(run, base, config, unet=unet, out=out, cache_dir=cache_dir)
    report = build_report(
        config,
        accelerator,
        state.step_times,
        state.loss,
        state.step,
        output,
        seed,  # type: ignore[arg-type]
        run.mixed_precision,
    )
    report.update(
        objective=f"diffusion-{config.objective}",
        beta=config.beta,
        pairs=len(pairs),
        final_ranked_share=state.metrics.get("accuracy", float("nan")),
        history=state.history,
        # a DPO example is a pair, two images; a KTO example one image
        images_per_step=report["images_per_step"] * (1 if kto else 2),
    )
    if kto:
        report.update(
            liked=liked, disliked=len(labelled) - liked, undesirable_weight=undesirable_weight
        )
    if report["seconds_per_step"]:
        report["images_per_second"] = report["images_per_step"] / report["seconds_per_step"]
    write_report(accelerator, out, report)
    accelerator.end_training()
    return TrainResult(output=output, report=report, out_dir=out)
