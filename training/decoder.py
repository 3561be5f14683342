"""Sharpen a trained embedded model's decoder without moving its latent space.

    python -m training.decoder --init-from shipped --data DATA128 --out runs/decoder

The UNet of a packaged model was trained on its VAE encoder's latents, so the encoder stays
frozen and only the decoder learns: every step decodes a random window of a cover's latent (a
sample of the frozen encoder's distribution, as the UNet was trained to produce) and charges
:func:`training.converge.vae_loss` – pixels plus an edge term – against the same window of the
cover. Windows rather than whole latents keep a step cheap on one core; the decoder is
convolutional, so what it learns on windows holds on the whole latent.

Checkpointed every ``checkpoint_every`` steps like :mod:`training.converge` (rerun to resume);
``out/decoder-NNNNNN`` are diffusers VAE folders, chosen between on the validation split by
reconstruction error (see :func:`reconstruction_error`).
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
from training.converge import ConvergeConfig, _as_float, _pixels, vae_loss

STATE_FILE = "decoder-state.pt"


@dataclass
class DecoderConfig:
    data: str
    out: str
    init_from: str
    steps: int = 2000
    batch_size: int = 16
    window: int = 8  # latent cells a side: 64 px at the embedded model's 8x VAE
    learning_rate: float = 2e-4
    edge_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    snapshot_every: int = 500
    log_every: int = 50


def _loss_config(config: DecoderConfig) -> ConvergeConfig:
    # vae_loss reads its weights from a ConvergeConfig; the KL term has no say here (the
    # encoder is frozen), so it is weighted 0.
    return ConvergeConfig(data="", out="", edge_weight=config.edge_weight, kl_weight=0.0)


def tune_decoder(config: DecoderConfig, *, log: Callable[[str], None] = print) -> Path:
    """Run (or continue) ``config``; returns ``out``."""
    import torch

    from models.embedded import from_package

    if config.steps < 1 or config.batch_size < 1 or config.window < 1:
        raise TrainingError("steps, batch_size and window must each be at least 1.")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoder-config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    vae = from_package(Path(config.init_from)).vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    covers, _ = _pixels(Path(config.data) / "covers")
    size = covers.shape[1]
    if size % factor or config.window * factor > size:
        raise TrainingError(f"{size} px covers do not hold a {config.window}-cell window.")

    vae.requires_grad_(False)
    vae.eval()
    with torch.no_grad():  # the frozen encoder's distributions, once
        dists = [
            vae.encode(_as_float(covers[i : i + 64])).latent_dist for i in range(0, len(covers), 64)
        ]
    mean = torch.cat([d.mean for d in dists])
    std = torch.cat([d.std for d in dists])
    decoder = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in decoder:
        p.requires_grad_(True)
    vae.decoder.train()
    optimizer = torch.optim.AdamW(decoder, lr=config.learning_rate)
    rng = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"step": 0, "seconds": 0.0}
    path = out / STATE_FILE
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        vae.load_state_dict(saved["vae"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.set_state(saved["rng"])
        state = saved["state"]
        log(f"resumed at step {state['step']}")

    def save() -> None:
        partial = out / (STATE_FILE + ".tmp")
        torch.save(
            {
                "vae": vae.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng.get_state(),
                "state": state,
            },
            partial,
        )
        os.replace(partial, path)

    loss_config = _loss_config(config)
    cells = size // factor
    clock = time.perf_counter()
    while state["step"] < config.steps:
        index = torch.randint(0, len(covers), (config.batch_size,), generator=rng)
        top, left = torch.randint(0, cells - config.window + 1, (2,), generator=rng).tolist()
        rows = slice(top, top + config.window)
        columns = slice(left, left + config.window)
        latent = mean[index][..., rows, columns] + std[index][..., rows, columns] * torch.randn(
            (config.batch_size, mean.shape[1], config.window, config.window), generator=rng
        )
        pixels = _as_float(
            covers[
                index.numpy(),
                top * factor : (top + config.window) * factor,
                left * factor : (left + config.window) * factor,
            ]
        )
        decoded = vae.decode(latent).sample
        loss = vae_loss(decoded, pixels, torch.zeros(1), loss_config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not torch.isfinite(loss):
            raise TrainingError(f"The decoder's loss became {loss.item()} at step {state['step']}.")
        state["step"] += 1
        now = time.perf_counter()
        state["seconds"] += now - clock
        clock = now
        step = state["step"]
        if step % config.log_every == 0:
            log(
                f"decoder: step {step}/{config.steps}, loss {loss.item():.4f}, {state['seconds'] / 60:.1f} min"
            )
        if step % config.checkpoint_every == 0 or step == config.steps:
            save()
        if step % config.snapshot_every == 0 or step == config.steps:
            vae.save_pretrained(out / f"decoder-{step:06d}", safe_serialization=True)
    return out


def reconstruction_error(vae: Any, pixels: Any, *, factor: int) -> dict[str, float]:
    """Mean absolute error (0–255) of ``vae`` decoding its own encoder's latent means of
    ``pixels`` ((N, R, R, 3) uint8), and the decoder's grid: gradient energy on every
    ``factor``-th pixel border over the rest (1.00 = none, eval/upscale_check.py's measure)."""
    import numpy as np
    import torch
    from PIL import Image

    from eval.upscale_check import grid_ratio

    errors, grids = [], []
    with torch.no_grad():
        for start in range(0, len(pixels), 32):
            batch = pixels[start : start + 32]
            decoded = vae.decode(vae.encode(_as_float(batch)).latent_dist.mean).sample
            images = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            errors.extend(np.abs(images.astype(float) - batch.astype(float)).mean(axis=(1, 2, 3)))
            grids.extend(grid_ratio(Image.fromarray(image), factor) for image in images)
    return {"mae": float(np.mean(errors)), "grid": float(np.mean(grids)), "n": len(errors)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.decoder", description=__doc__)
    parser.add_argument("--data", required=True, help="a folder with covers/ at the model's size")
    parser.add_argument("--out", required=True)
    parser.add_argument("--init-from", default="shipped", help="'shipped' or a package folder")
    parser.add_argument("--steps", type=int, default=DecoderConfig.steps)
    args = parser.parse_args(argv)
    init_from = args.init_from
    if init_from == "shipped":
        from models.embedded import PACKAGED

        init_from = str(PACKAGED)
    tune_decoder(
        DecoderConfig(data=args.data, out=args.out, init_from=init_from, steps=args.steps),
        log=lambda line: print(line, flush=True),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
