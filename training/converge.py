"""Train the embedded model for as long as it keeps improving, resumably, at 128 px (issue 29).

:mod:`training.pretrain` makes the miniature study's baseline inside the study's hour: fixed
step counts, nothing kept if the process stops. The shipped default needs many more steps than
an hour holds on one core, so this run is built to be stopped and continued:

    1. the VAE on random crops (reconstruction + an edge term, see :func:`vae_loss`);
    2. every training image's latent distribution, once (the VAE is frozen from then on);
    3. UNet + CLIP text encoder on the generic domain (the "pretraining" of the study), then
    4. the same weights on the synthetic covers, open-ended: a snapshot every
       ``snapshot_every`` steps, chosen between afterwards on the validation split.

Every ``checkpoint_every`` steps the whole state (weights, EMA, optimiser, the random
generator, the step) is written atomically to ``out/state.pt``; rerunning the same command
continues from it, bit for bit as if it had not stopped (the data order comes from the
checkpointed generator), and a finished run continues when ``cover_steps`` is raised. Stop it
whenever the validation figures stop improving.

The learning rate is constant after warm-up (not a cosine to a fixed end) because the end is
not known in advance; the EMA of the weights does the averaging a decaying rate would.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.config import TrainingError
from training.objective import prediction_target

STATE_FILE = "state.pt"
PHASES = ("vae", "latents", "generic", "covers")


@dataclass
class ConvergeConfig:
    """One open-ended run; ``data`` holds ``covers/`` and ``generic/`` image folders drawn at
    ``resolution`` by :func:`training.synthetic.write_dataset`."""

    data: str
    out: str
    resolution: int = 128
    seed: int = 0
    # Sized for one shared CPU core (issue 29's run: VAE 0.46 s a step, UNet 0.55 s at batch
    # 16, encoding 0.08 s an image at 128 px, with the machine's other core busy).
    vae_steps: int = 2500
    vae_batch_size: int = 16
    vae_crop: int = 32  # px, a multiple of the VAE's downsampling (8 at 128 px)
    vae_learning_rate: float = 1e-3
    edge_weight: float = 1.0  # of the finite-difference L1 term: sharp edges, not soft ones
    kl_weight: float = 1e-6
    generic_steps: int = 200
    generic_images: int = 1500  # of the generic train split: encoding every one costs minutes
    cover_steps: int = 20000  # an upper bound; the run is meant to be stopped before it
    batch_size: int = 16
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    proportion_empty_prompts: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    snapshot_every: int = 500
    log_every: int = 50
    # A trained diffusers package (models/embedded.py's layout) to continue from instead of
    # starting from nothing: its VAE is kept as it is and the run goes latents -> covers.
    init_from: str | None = None


def check_config(config: ConvergeConfig) -> None:
    for name in ("vae_steps", "batch_size", "vae_batch_size", "checkpoint_every", "snapshot_every"):
        if getattr(config, name) < 1:
            raise TrainingError(f"{name} must be at least 1, got {getattr(config, name)}.")
    from models.embedded import VAE_BLOCKS

    if config.resolution not in VAE_BLOCKS:
        raise TrainingError(f"resolution must be one of {sorted(VAE_BLOCKS)}.")
    factor = 2 ** (len(VAE_BLOCKS[config.resolution]) - 1)
    if config.vae_crop % factor or config.vae_crop > config.resolution:
        raise TrainingError(f"vae_crop must be a multiple of {factor}, at most the resolution.")


def vae_loss(reconstruction: Any, target: Any, kl: Any, config: ConvergeConfig) -> Any:
    """L1 + L2 on pixels, L1 on horizontal and vertical differences, a whisper of KL.

    The pixel terms alone let a small decoder round every edge off (a blur costs little L2 on
    flat shapes); the difference term charges a soft edge as much as a misplaced one, which is
    what the covers' crisp shapes need at 512 px.
    """
    import torch.nn.functional as F

    def grads(x: Any) -> tuple[Any, Any]:
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]

    (ry, rx), (ty, tx) = grads(reconstruction), grads(target)
    edges = F.l1_loss(ry, ty) + F.l1_loss(rx, tx)
    return (
        F.l1_loss(reconstruction, target)
        + F.mse_loss(reconstruction, target)
        + config.edge_weight * edges
        + config.kl_weight * kl.mean()
    )


def _pixels(folder: Path) -> tuple[Any, list[str]]:
    """(N, R, R, 3) uint8 and the captions of one image folder's train split."""
    import numpy as np

    from training.data import load_examples, open_rgb

    examples = load_examples(folder)
    return np.stack([np.asarray(open_rgb(e.image)) for e in examples]), [
        e.caption for e in examples
    ]


def _as_float(pixels: Any) -> Any:
    import torch

    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (B, 3, R, R)


def converge(config: ConvergeConfig, *, log: Callable[[str], None] = print) -> Path:
    """Run (or continue) ``config``; returns ``out``. See the module docstring."""
    check_config(config)
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from models.embedded import build_architecture
    from training.data import token_ids

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    data = Path(config.data)
    covers, cover_captions = _pixels(data / "covers")
    # A continued model trains on the covers only: no generic latents to encode.
    generic_images = 0 if config.init_from else config.generic_images
    generic, generic_captions = _pixels(data / "generic")
    generic, generic_captions = generic[:generic_images], generic_captions[:generic_images]
    if covers.shape[1] != config.resolution:
        raise TrainingError(f"{data}: images are {covers.shape[1]} px, not {config.resolution}.")
    log(f"data: {len(covers)} covers, {len(generic)} generic images")

    pipe = build_architecture(seed=config.seed, native_size=config.resolution)
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    path = out / STATE_FILE
    state: dict[str, Any] = {"phase": "vae", "step": 0, "seconds": 0.0}
    if config.init_from and not path.is_file():
        _load_package(pipe, Path(config.init_from), config.resolution)
        state["phase"] = "latents"
        log(f"starting from {Path(config.init_from).name}: its VAE is kept")
    params = [*unet.parameters(), *text_encoder.parameters()]
    vae_optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    ema = EMAModel(params, decay=config.ema_decay)
    rng = torch.Generator().manual_seed(config.seed)
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        vae.load_state_dict(saved["vae"])
        unet.load_state_dict(saved["unet"])
        text_encoder.load_state_dict(saved["text_encoder"])
        vae_optimizer.load_state_dict(saved["vae_optimizer"])
        optimizer.load_state_dict(saved["optimizer"])
        ema.load_state_dict(saved["ema"])
        rng.set_state(saved["rng"])
        state = saved["state"]
        log(f"resumed: {state['phase']} step {state['step']}")
    latents = out / "latents.pt"

    def save() -> None:
        snapshot = {
            "vae": vae.state_dict(),
            "unet": unet.state_dict(),
            "text_encoder": text_encoder.state_dict(),
            "vae_optimizer": vae_optimizer.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict(),
            "rng": rng.get_state(),
            "state": state,
        }
        partial = out / (STATE_FILE + ".tmp")
        torch.save(snapshot, partial)
        os.replace(partial, path)  # atomic: a kill mid-write keeps the previous checkpoint

    clock = time.perf_counter()

    def tick() -> None:
        nonlocal clock
        now = time.perf_counter()
        state["seconds"] += now - clock
        clock = now

    # 1. The VAE, on crops of both domains.
    both = np.concatenate([covers, generic])
    if state["phase"] == "vae":
        vae.train()
        while state["step"] < config.vae_steps:
            # A fifth of the rate for the last fifth: at a constant 1e-3 the reconstruction
            # error stalled (MAE 25/255 from step 800 to 2000 in issue 29's run).
            late = state["step"] >= 0.8 * config.vae_steps
            for group in vae_optimizer.param_groups:
                group["lr"] = config.vae_learning_rate * (0.2 if late else 1.0)
            index = torch.randint(0, len(both), (config.vae_batch_size,), generator=rng)
            crop = config.vae_crop
            top, left = torch.randint(0, config.resolution - crop + 1, (2,), generator=rng).tolist()
            batch = _as_float(both[index.numpy(), top : top + crop, left : left + crop])
            if torch.rand(1, generator=rng).item() < 0.5:
                batch = batch.flip(-1)
            posterior = vae.encode(batch).latent_dist
            decoded = vae.decode(posterior.sample(generator=rng)).sample
            loss = vae_loss(decoded, batch, posterior.kl(), config)
            vae_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            vae_optimizer.step()
            state["step"] += 1
            _checkpoint(state, config, save, tick, log, "vae", config.vae_steps, loss.item())
        state.update(phase="latents", step=0)
        save()

    # 2. Latent distributions, once.
    vae.eval().requires_grad_(False)
    if state["phase"] == "latents" or not latents.is_file():
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(both), 64):
                dist = vae.encode(_as_float(both[start : start + 64])).latent_dist
                means.append(dist.mean)
                stds.append(dist.std)
        mean, std = torch.cat(means), torch.cat(stds)
        # A continued model keeps the latent scale its UNet learnt; a new one sets it from
        # the data (unit variance, as Stable Diffusion's 0.18215 was chosen).
        scaling = vae.config.scaling_factor if config.init_from else 1.0 / mean.std().item()
        torch.save({"mean": mean, "std": std, "scaling": scaling}, latents)
        if state["phase"] == "latents":
            # A continued model has had its generic pretraining: straight to the covers.
            state.update(phase="covers" if config.init_from else "generic", step=0)
        save()
    cached = torch.load(latents)
    vae.register_to_config(scaling_factor=cached["scaling"])
    mean, std, scaling = cached["mean"], cached["std"], cached["scaling"]
    caption_ids = token_ids(tokenizer, [*cover_captions, *generic_captions])
    empty_ids = token_ids(tokenizer, [""])
    domains = {"covers": (0, len(covers)), "generic": (len(covers), len(both))}

    # 3.–4. UNet + text encoder: generic, then covers.
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet.train()
    text_encoder.train()
    for phase, total in (("generic", config.generic_steps), ("covers", config.cover_steps)):
        if state["phase"] != phase:
            continue
        low, high = domains[phase]
        while state["step"] < total:
            lr = config.learning_rate * min(1.0, (state["step"] + 1) / config.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = torch.randint(low, high, (config.batch_size,), generator=rng)
            noisy_latent = mean[index] + std[index] * torch.randn(mean[index].shape, generator=rng)
            x0 = noisy_latent * scaling
            ids = caption_ids[index].clone()
            dropped = torch.rand(config.batch_size, generator=rng) < config.proportion_empty_prompts
            ids[dropped] = empty_ids
            noise = torch.randn(x0.shape, generator=rng)
            timesteps = torch.randint(0, 1000, (config.batch_size,), generator=rng)
            noisy = noise_scheduler.add_noise(x0, noise, timesteps)
            text = text_encoder(ids, return_dict=False)[0]
            prediction = unet(noisy, timesteps, text, return_dict=False)[0]
            target = prediction_target(noise_scheduler, x0, noise, timesteps)
            loss = torch.nn.functional.mse_loss(prediction, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            ema.step(params)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"The loss became {loss.item()} at {phase} step {state['step']}."
                )
            state["step"] += 1
            _checkpoint(state, config, save, tick, log, phase, total, loss.item())
            if state["step"] % config.snapshot_every == 0 or state["step"] == total:
                _snapshot(pipe, ema, params, out / "snapshots" / f"{phase}-{state['step']:06d}")
        if phase == "generic":
            state.update(phase="covers", step=0)
            save()
    # The state stays "covers" at its last step: a rerun with more cover_steps goes on from here.
    save()
    return out


def _load_package(pipe: Any, package: Path, resolution: int) -> None:
    """Copy a packaged model's weights into ``pipe``'s architecture (same shapes or an error)."""
    from models.embedded import from_package

    if not (package / "unet" / "config.json").is_file():
        raise TrainingError(f"{package}: not a packaged embedded model (no unet/config.json).")
    trained = from_package(package)
    size = trained.unet.config.sample_size * 2 ** (len(trained.vae.config.block_out_channels) - 1)
    if size != resolution:
        raise TrainingError(f"{package} draws at {size} px, the run at {resolution} px.")
    for component in ("vae", "unet", "text_encoder"):
        getattr(pipe, component).load_state_dict(getattr(trained, component).state_dict())
    pipe.vae.register_to_config(scaling_factor=trained.vae.config.scaling_factor)


def _checkpoint(
    state: dict[str, Any],
    config: ConvergeConfig,
    save: Callable[[], None],
    tick: Callable[[], None],
    log: Callable[[str], None],
    phase: str,
    total: int,
    loss: float,
) -> None:
    tick()
    step = state["step"]
    if step % config.log_every == 0:
        log(
            f"{phase}: step {step}/{total}, loss {loss:.4f}, {state['seconds'] / 60:.1f} min so far"
        )
    if step % config.checkpoint_every == 0:
        save()


def _snapshot(pipe: Any, ema: Any, params: list[Any], folder: Path) -> None:
    """The EMA weights as a diffusers folder, without disturbing the training weights."""
    ema.store(params)
    ema.copy_to(params)
    try:
        pipe.save_pretrained(folder, safe_serialization=True)
    finally:
        ema.restore(params)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.converge", description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cover-steps", type=int, default=ConvergeConfig.cover_steps)
    parser.add_argument("--generic-steps", type=int, default=ConvergeConfig.generic_steps)
    parser.add_argument("--vae-steps", type=int, default=ConvergeConfig.vae_steps)
    parser.add_argument(
        "--init-from",
        help="continue a trained model: 'shipped' (the packaged default) or a package folder; "
        "its VAE is kept and the run trains on the covers only",
    )
    args = parser.parse_args(argv)
    init_from = args.init_from
    if init_from == "shipped":
        from models.embedded import PACKAGED

        init_from = str(PACKAGED)
    config = ConvergeConfig(
        data=args.data,
        out=args.out,
        cover_steps=args.cover_steps,
        generic_steps=args.generic_steps,
        vae_steps=args.vae_steps,
        init_from=init_from,
    )
    converge(config, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
