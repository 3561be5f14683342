"""The queue's job for a cover request: its generation parameters and one image per prompt
(models/jobs.py), as bot/app/cover.py's CoverService submits them."""

from __future__ import annotations

from collections.abc import Sequence

from bot.app.prompts import Prompt
from bot.app.request import CoverRequest
from models.jobs import GenerationJob, GenerationParams, ImageSpec
from models.registry import ModelSpec


def generation_params(
    spec: ModelSpec, size: int, steps: int, guidance: float, *, strength: float | None = None
) -> GenerationParams:
    return GenerationParams(
        model=spec.name,
        width=size,
        height=size,
        steps=steps,
        guidance=guidance,
        lora=str(spec.lora) if spec.lora else None,  # params cross into JSON and SQL
        strength=strength,
    )


def generation_job(
    request: CoverRequest,
    params: GenerationParams,
    prompts: Sequence[Prompt],
    label: str,
    *,
    init_image: bytes | None = None,
) -> GenerationJob:
    return GenerationJob(
        user_id=request.user_id,
        params=params,
        images=tuple(ImageSpec(p.text, p.negative, p.seed, init_image) for p in prompts),
        label=label,
    )
