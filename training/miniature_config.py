"""What one run of the miniature study (training/miniature.py) is: its typed config, where each
of its models lives, each fine-tune arm's :class:`~training.config.TrainConfig`, and the budget
plan (``--plan``) that estimates its wall time before anything runs.

Two designs share this config:

- **pretrained per seed** (no ``baseline``): the study pretrains the baseline itself, once per
  training seed, and seed k of every arm is fine-tuned from the baseline's seed k;
- **fixed baseline** (``baseline`` names a diffusers folder, such as a ``python -m
  training.converge --cover-steps 0`` generic snapshot): every arm and seed is fine-tuned from
  that one checkpoint (its VAE shared, as seed 000 shared SD 1.5's), the baseline arm *is* that
  checkpoint, and the seeds vary the fine-tunes only. The resolution is the checkpoint's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.synthetic import DatasetSizes

SUMMARY_FILE = "miniature.json"
BASELINE = "baseline"
FULL = "full fine-tune (UNet + text encoder)"
FULL_UNET = "full fine-tune (UNet only)"
LORA = "LoRA fine-tune"
# arm label → (run folder, TrainConfig method, train the text encoder)
ARMS: dict[str, tuple[str, str, bool]] = {
    FULL: ("full", "full", True),
    FULL_UNET: ("full-unet", "full", False),
    LORA: ("lora", "lora", False),
}
# Seed 000's question, declared before any run as the study's one primary test: does the full
# fine-tune bring generated covers closer to real ones than the baseline, on KID?
PRIMARY = (BASELINE, FULL, "kid")
STUDY_STEPS = 20  # denoising steps of every generated test image
FOLLOW_LABEL = "genre"  # the palette test scores the genre word
BUDGET_MINUTES = 60.0  # what one run may take on the 2-core development machine (--plan)
# Fixed-baseline design: the images of training seed k are drawn with seeds
# seed + k·NOISE_STRIDE + i, so the baseline's k rows are k draws of one checkpoint.
NOISE_STRIDE = 100_000


@dataclass
class MiniatureConfig:
    """What one reproduction runs. ``quick()`` gives a smoke-sized variant (a few minutes on 2
    shared CPU cores in tests/training/test_miniature.py, with a stand-in feature network)
    whose numbers mean nothing; the defaults are the committed study's (docs/miniature.md)."""

    out: Path = Path("runs/miniature")
    seed: int = 0
    device: str = "auto"
    guidance: float = 4.0  # classifier-free guidance of the study's images (and the shipped model)
    # A fixed pretrained diffusers folder (the fixed-baseline design); None: pretrain per seed.
    baseline: str | None = None
    # Sized for the study's hour on one core, where Inception features, not drawing, are the
    # cost (~0.3 s an image on 2 quiet cores, docs/eval.md): 600 real test covers (the
    # one-seed study had 500), 120 for validation.
    sizes: DatasetSizes = field(
        default_factory=lambda: DatasetSizes(covers=(6000, 120, 600), generic=(6000, 200, 200))
    )
    pretrain: dict[str, Any] = field(
        default_factory=lambda: {"vae_steps": 500, "steps": 500}
    )  # PretrainConfig overrides: a third (VAE) and 5/12 (UNet) of its defaults
    finetune_steps: int = 60  # the one-seed study ran 500; every run must fit the hour
    finetune_batch_size: int = 32
    # Each arm's learning-rate grid (by run folder), tried on training seed 0 at the same
    # step budget and chosen between on the validation split's KID: today's rate and one
    # either side (a factor of 2). One rate: no sweep, that rate is used.
    learning_rates: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {
            "full": (2.5e-4, 5e-4, 1e-3),
            "full-unet": (2.5e-4, 5e-4, 1e-3),
            "lora": (1e-3, 2e-3, 4e-3),
        }
    )
    # An EMA of the trained weights for every arm, LoRA's adapters included, with one decay:
    # the arms differ in what they train, not in how it is averaged. False: none for any.
    ema: bool = True
    ema_decay: float = 0.995
    lora_rank: int = 16
    train_seeds: int = 3  # each arm (and a pretrained-per-seed baseline) is trained this often
    generate: int = 80  # test prompts each model answers
    validate: int = 48  # validation prompts each seed-0 fine-tune answers
    bootstrap: int = 200  # resamples per interval
    fid_resamples: int = 40  # FID half-samples
    workers: int = 2  # fine-tunes run at once, one process and one torch thread each

    @classmethod
    def quick(cls, out: Path, seed: int = 0) -> MiniatureConfig:
        return cls(
            out=out,
            seed=seed,
            sizes=DatasetSizes(covers=(96, 8, 24), generic=(96, 8, 8)),
            pretrain={"vae_steps": 10, "steps": 10, "batch_size": 8, "log_every": 5},
            finetune_steps=4,
            finetune_batch_size=8,
            learning_rates={"full": (5e-4,), "full-unet": (5e-4,), "lora": (2e-3,)},
            train_seeds=2,
            generate=24,
            validate=8,
            bootstrap=10,
            fid_resamples=4,
        )


def check_config(config: MiniatureConfig) -> None:
    """Raise ``ValueError`` naming the setting and its value when a run cannot work."""
    for name in ("train_seeds", "workers", "finetune_steps", "finetune_batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}.")
    folders = {folder for folder, _, _ in ARMS.values()}
    if set(config.learning_rates) != folders:
        raise ValueError(
            f"learning_rates must give a grid for each arm ({', '.join(sorted(folders))}), "
            f"got {sorted(config.learning_rates)}."
        )
    for folder, grid in config.learning_rates.items():
        if not grid or any(not rate > 0 for rate in grid) or len(set(grid)) != len(grid):
            raise ValueError(
                f"learning_rates[{folder!r}] must be distinct positive rates, got {grid}."
            )
    if config.baseline is not None:
        model = Path(config.baseline)
        if not (model / "model_index.json").is_file():
            raise ValueError(
                f"baseline must be a diffusers folder (with model_index.json), got {model}."
            )


def resolution(config: MiniatureConfig) -> int:
    """The study's image size: the fixed baseline's native size, else the 64 px architecture
    the study pretrains (training.pretrain.PretrainConfig.architecture)."""
    if config.baseline is None:
        return 64
    from models.registry import resolve_model

    return resolve_model(str(config.baseline)).native_size


def sweeping(config: MiniatureConfig) -> bool:
    return any(len(grid) > 1 for grid in config.learning_rates.values())


# -- where each model lives -------------------------------------------------------------------


def baseline_folder(config: MiniatureConfig, k: int) -> Path:
    """The pretraining run of the baseline with training seed ``k`` (its model is ``model/``)."""
    return Path(config.out) / "baseline" / f"seed{k}"


def baseline_model(config: MiniatureConfig, k: int) -> Path:
    """The model seed ``k`` of every arm starts from: the fixed baseline, or pretraining k's."""
    if config.baseline is not None:
        return Path(config.baseline)
    return baseline_folder(config, k) / "model"


def run_folder(config: MiniatureConfig, arm: str, k: int) -> Path:
    return Path(config.out) / ARMS[arm][0] / f"seed{k}"


def sweep_folder(config: MiniatureConfig, arm: str, rate: float) -> Path:
    """The seed-0 run of ``arm`` at learning rate ``rate`` (its copy becomes ``arm/seed0``)."""
    return Path(config.out) / "sweep" / f"{ARMS[arm][0]}-lr{rate:g}"


def output_of(folder: Path, arm: str) -> Path:
    """The file a finished training run of ``arm`` in ``folder`` leaves."""
    if ARMS[arm][1] == "lora":
        return folder / "lora" / "pytorch_lora_weights.safetensors"
    return folder / "model" / "model_index.json"


def arm_output(config: MiniatureConfig, arm: str, k: int) -> Path:
    """The file a finished training run of ``arm`` with training seed ``k`` leaves."""
    return output_of(run_folder(config, arm, k), arm)


def model_and_lora(
    config: MiniatureConfig, arm: str, k: int, folder: Path | None = None
) -> tuple[Path, Path | None]:
    """(diffusers folder, LoRA file or None) of ``arm``'s run ``folder`` (default: seed k's)."""
    output = output_of(folder or run_folder(config, arm, k), arm)
    return (baseline_model(config, k), output) if ARMS[arm][1] == "lora" else (output.parent, None)


def finetune_config(
    config: MiniatureConfig,
    base: Path,
    arm: str,
    k: int = 0,
    *,
    learning_rate: float,
    out: Path | None = None,
) -> TrainConfig:
    """Arm ``arm`` of the fine-tune of ``base`` on the covers, training seed ``config.seed + k``,
    at ``learning_rate``: seed 001's recipe (LoRA on the attention projections, constant LR)
    with an EMA for every arm when ``config.ema``, and steps and rates sized for a model this
    small – the seeds' 1e-5 for 100 steps moves a 1.5M-parameter UNet nowhere."""
    _, method, text_encoder = ARMS[arm]
    return TrainConfig(
        data=str(Path(config.out) / "data" / "covers"),
        base=str(base),
        out=str(out or run_folder(config, arm, k)),
        method=method,
        resolution=resolution(config),
        train_batch_size=config.finetune_batch_size,
        max_train_steps=config.finetune_steps,
        learning_rate=learning_rate,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        use_ema=config.ema,
        # The base's text encoder never saw the cover words (they were not in its generic
        # captions); the first full arm teaches it them, the other two keep it frozen as the
        # seeds did, so "UNet only" against LoRA compares like with like (seed 001's question).
        train_text_encoder=text_encoder,
        ema_decay=config.ema_decay,
        lora_rank=config.lora_rank,
        snr_gamma=None,  # as the pretraining: see PretrainConfig.snr_gamma
        proportion_empty_prompts=0.1,
        checkpointing_steps=0,
        seed=config.seed + k,
        cache_dir=str(Path(config.out) / "cache"),
    )


# -- the budget plan ------------------------------------------------------------------------------

# Seconds, one torch thread on the shared 2-core development machine, from measured runs:
# - a 60-step fine-tune of 32 images took 0.7–0.9 min at 64 px (docs/miniature.md's stage
#   times): 0.8 s a step with loading and saving;
# - at 128 px training.converge measured 0.55 s a UNet + text-encoder step of 16 and 0.08 s to
#   encode an image (its module docstring); training.train encodes every batch, so a step of
#   B images is B·0.08 + 0.55·B/16;
# - the study stage, 960 images generated at 64 px plus 600 real ones, took 9.8 min; with
#   Inception at ~0.3 s an image (docs/eval.md) that leaves ~0.13 s to draw one. At 128 px
#   drawing is taken as 4× that (four times the latent pixels): an assumption, not a timing.
# - a pretraining (the per-seed design) took 8.5–9.2 min at 500 + 500 steps: 0.55 s a step.
INCEPTION_S = 0.3
DRAW_S = {64: 0.13, 128: 0.52}
PRETRAIN_STEP_S = 0.55


def finetune_step_seconds(size: int, batch: int) -> float:
    if size == 64:
        return 0.8 * batch / 32
    return batch * 0.08 + 0.55 * batch / 16


@dataclass(frozen=True)
class PlannedStage:
    name: str
    minutes: float  # wall minutes, parallel work divided between the workers


def plan(config: MiniatureConfig) -> list[PlannedStage]:
    """Every stage with its estimated wall minutes (see the timings above); the sum is what
    ``--plan`` holds against :data:`BUDGET_MINUTES`."""
    size = resolution(config)
    draw = DRAW_S.get(size, DRAW_S[128] * (size / 128) ** 2)
    per_image = draw + INCEPTION_S
    step = finetune_step_seconds(size, config.finetune_batch_size)
    run_minutes = config.finetune_steps * step / 60
    workers = min(config.workers, 2)  # two cores: more processes share them
    stages = [PlannedStage("dataset", 0.2 * (size / 64) ** 2)]
    if config.baseline is None:
        steps = config.pretrain.get("vae_steps", 500) + config.pretrain.get("steps", 500)
        pretrain_minutes = steps * PRETRAIN_STEP_S / 60
        stages.append(
            PlannedStage(f"pretrain × {config.train_seeds}", pretrain_minutes * config.train_seeds)
        )
    seed0 = sum(len(grid) for grid in config.learning_rates.values())
    stages.append(
        PlannedStage(f"seed-0 fine-tunes × {seed0}", _parallel(seed0, run_minutes, workers))
    )
    real_validation = config.sizes.covers[1]
    stages.append(
        PlannedStage(
            f"validate {seed0} models × {config.validate} prompts",
            (seed0 * config.validate * per_image + real_validation * INCEPTION_S) / 60,
        )
    )
    rest = len(ARMS) * (config.train_seeds - 1)
    if rest:
        stages.append(PlannedStage(f"fine-tunes × {rest}", _parallel(rest, run_minutes, workers)))
    models = (len(ARMS) + 1) * config.train_seeds
    images = models * config.generate
    stages.append(
        PlannedStage(
            f"study {models} models × {config.generate} prompts",
            (images * per_image + config.sizes.covers[2] * INCEPTION_S) / 60,
        )
    )
    stages.append(PlannedStage("samples", (len(ARMS) + 1) * 6 * draw / 60))
    return stages


def _parallel(runs: int, minutes: float, workers: int) -> float:
    """Wall minutes of ``runs`` equal runs on ``workers`` processes."""
    return -(-runs // workers) * minutes


def plan_text(stages: list[PlannedStage]) -> str:
    total = sum(stage.minutes for stage in stages)
    width = max(len(stage.name) for stage in stages)
    lines = [f"{stage.name:<{width}}  {stage.minutes:6.1f} min" for stage in stages]
    lines.append(f"{'total (estimated wall)':<{width}}  {total:6.1f} min")
    return "\n".join(lines)
