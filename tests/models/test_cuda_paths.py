"""The CUDA paths, checked on the CPU where a CPU can show them (issue 39).

No GPU has run this code yet; each test here pins down one defect a read of the CUDA paths
found, with a stand-in for the part only a GPU has (a fake device hook, a stub runner raising
CUDA's own error messages, a device name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.jobs import GenerationParams, ImageSpec, NoControl
from models.optimize import Optimizations
from models.runner import DiffusersRunner


def embedded(steps: int = 2, **changes: Any) -> GenerationParams:
    base = {"model": "embedded", "width": 64, "height": 64, "steps": steps, "guidance": 7.5}
    return GenerationParams(**{**base, **changes})


SPECS = [ImageSpec(f"night drive playlist cover image {n}", "blurry", seed=n) for n in range(2)]


@pytest.fixture
def runner(cache_dir: Path, embedded_model_dir: Path) -> DiffusersRunner:
    return DiffusersRunner(device="cpu", cache_dir=cache_dir, optimizations=Optimizations())


# -- 1. the prompt-embedding cache holds tensors, not autograd graphs -------------------------


def test_cached_prompt_embeddings_carry_no_autograd_graph(runner: DiffusersRunner) -> None:
    """encode_prompt runs outside the pipeline's no_grad; with the text encoder's parameters
    requiring grad, each cached row would keep the encoder's activations alive (GBs on a GPU
    once the cache is full)."""
    runner(embedded(), SPECS, NoControl())
    pipe = runner._loaded[runner.loaded[0]]
    assert any(p.requires_grad for p in pipe.text_encoder.parameters())  # the risky setting
    [cache] = runner._embeddings.values()
    tensors = [t for pair in cache.values() for t in pair if t is not None]
    assert len(tensors) == 2 * len(SPECS)  # positive and negative per prompt
    for tensor in tensors:
        assert not tensor.requires_grad and tensor.grad_fn is None


# -- 8. same seed, same noise, whatever the device ---------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_generators_are_cpu_generators_whatever_the_device(
    runner: DiffusersRunner, device: str
) -> None:
    """CUDA's random numbers differ from the CPU's for one seed: a reroll, a resume or a Ray
    worker on another device would make other covers from the same seed."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    on_cpu = runner._generators([7, 8])
    runner.device = device  # only the label: the generators must not depend on it
    elsewhere = runner._generators([7, 8])
    assert [g.device.type for g in elsewhere] == ["cpu", "cpu"]
    shape = (2, 4, 8, 8)  # (B, C, h, w): the initial latents of two images
    first = randn_tensor(shape, generator=on_cpu, device=torch.device("cpu"))
    second = randn_tensor(shape, generator=elsewhere, device=torch.device("cpu"))
    assert torch.equal(first, second)
