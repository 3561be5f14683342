"""Package a trained snapshot (and optionally a sharper decoder) as the embedded default.

    python -m training.ship_embedded --snapshot runs/emb128c/snapshots/covers-004000 \
        --decoder runs/decoder/decoder-002000 --validation runs/checks/v4-validation/check.json

The snapshot is a diffusers folder written by :mod:`training.converge`; the decoder one written
by :mod:`training.decoder` from the same encoder (its encoder weights must be the snapshot's, or
the UNet would paint in a latent space the decoder does not read – checked). The package is
float16 (models/embedded.py ``export_to_package``) with the embedded preset's scheduler, and its
info file records what was chosen and the validation figures it was chosen on.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from training.config import TrainingError


def ship(
    snapshot: Path,
    *,
    decoder: Path | None,
    validation: dict[str, Any],
    version: str,
    folder: Path,
) -> int:
    """Write the package into ``folder`` (replacing it); returns its size in bytes."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from models.embedded import embedded_scheduler, export_to_package

    pipe = StableDiffusionPipeline.from_pretrained(snapshot, safety_checker=None)
    method = f"python -m training.converge, snapshot {snapshot.name}"
    if decoder is not None:
        sharper = AutoencoderKL.from_pretrained(decoder)
        theirs = sharper.state_dict()
        for key, value in pipe.vae.state_dict().items():
            if key.startswith(("encoder.", "quant_conv.")) and not torch.equal(value, theirs[key]):
                raise TrainingError(f"{decoder} was not trained on {snapshot}'s encoder ({key}).")
        pipe.vae.load_state_dict(theirs)
        method += f"; decoder {decoder.name} (python -m training.decoder, encoder frozen)"
    pipe.scheduler = embedded_scheduler()
    # What StableDiffusionPipeline writes into every scheduler it loads (and the release before
    # carried); "trailing" spacing never reads it, so the sampling is the same either way.
    pipe.scheduler.register_to_config(steps_offset=1)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    info = {
        "name": "embedded",
        "version": version,
        "native_size": size,
        "trained": True,
        "method": method + ", chosen on the validation split",
        "validation": validation,
        "note": (
            f"Trained by `python -m training.converge` on synthetic playlist covers at {size} px "
            "and its decoder sharpened by `python -m training.decoder`; docs/embedded.md has "
            "its figures."
        ),
    }
    if folder.exists():
        shutil.rmtree(folder)
    return export_to_package(pipe, info, folder)


def main(argv: list[str] | None = None) -> int:
    from models.embedded import EMBEDDED_VERSION, PACKAGED

    parser = argparse.ArgumentParser(prog="python -m training.ship_embedded", description=__doc__)
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--decoder", type=Path)
    parser.add_argument("--validation", type=Path, required=True, help="eval.embedded_check JSON")
    parser.add_argument("--version", default=EMBEDDED_VERSION)
    parser.add_argument("--folder", type=Path, default=PACKAGED)
    args = parser.parse_args(argv)
    validation = json.loads(args.validation.read_text(encoding="utf-8"))
    size = ship(
        args.snapshot,
        decoder=args.decoder,
        validation=validation,
        version=args.version,
        folder=args.folder,
    )
    print(f"Wrote {args.folder.name} ({size / 1e6:.1f} MB).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
