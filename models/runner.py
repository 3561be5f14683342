"""The real :class:`~models.jobs.Runner`: diffusers pipelines, cached, one call per batch.

The queue calls :class:`DiffusersRunner` from its worker thread with a batch of image specs that
share :class:`~models.jobs.GenerationParams`. The runner

1. resolves the model and takes its pipeline from a small LRU cache (loading it on a miss);
2. runs one pipeline call for the whole batch, one seeded generator per image, so an image does
   not depend on what it was batched with, reporting every denoising step to the queue;
3. regenerates black images (the safety checker's output) with new deterministic seeds, in
   further pipeline calls whose progress counts from step 1 again.

With ``params.strength`` set the call is image-to-image: each spec's ``init_image`` is the
start, and the pipeline is the loaded one's own image-to-image form, built from the same
components (no second copy of the weights), for every kind of model the registry loads.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.devices import pick_device, torch_dtype
from models.errors import ModelUnavailable
from models.img2img import check_img2img, img2img_steps, init_image
from models.jobs import (
    DeviceBroken,
    GeneratedImage,
    GenerationParams,
    ImageSpec,
    OutOfMemory,
    RunControl,
    is_broken_device,
    is_out_of_memory,
)
from models.loading import load_hub_pipeline, load_pipeline, load_tiny_decoder
from models.optimize import Optimizations
from models.postprocess import is_black, latent_previews
from models.presets import ModelSpec
from models.registry import resolve_model

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

IF_OUTPUT_SIDE = 256  # DeepFloyd IF's stage II makes squares this big
RETRY_SEED_STRIDE = 1_000_003  # a prime: retry seeds of nearby user seeds never collide soon
_SEED_MODULUS = 2**63  # torch generators take any 64-bit seed; stay clear of the sign bit

# (model, lora, lora_scale): a pipeline with a fused LoRA is a different pipeline.
PipelineKey = tuple[str, str | None, float]
# What a generation pass returns per image: the image and whether it came out black.
Outcome = tuple["Image.Image", bool]
Generate = Callable[[Sequence[ImageSpec], Sequence[int]], list[Outcome]]


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of black-image retry number ``attempt`` (1, 2, ...) for a user's ``seed``."""
    return (seed + RETRY_SEED_STRIDE * attempt) % _SEED_MODULUS


class DiffusersRunner:
    """Generates images with diffusers; keeps up to ``max_loaded`` pipelines in memory.

    ``device`` is "auto" or an explicit torch device (see :func:`models.registry.pick_device`);
    ``cache_dir`` is the project's cache (the embedded model is built there on first use);
    ``black_retries`` bounds how often one black image is regenerated.
    """

    def __init__(
        self,
        *,
        device: str = "auto",
        cache_dir: Path,
        allow_downloads: bool = False,
        black_retries: int = 2,
        max_loaded: int = 1,
        optimizations: Optimizations | None = None,
    ) -> None:
        if black_retries < 0:
            raise ValueError(f"black_retries must be 0 or more, got {black_retries}.")
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded}.")
        self.device = pick_device(device)
        self.cache_dir = Path(cache_dir)
        self.allow_downloads = allow_downloads
        self.black_retries = black_retries
        self.max_loaded = max_loaded
        self.optimizations = optimizations or Optimizations()
        self._loaded: OrderedDict[PipelineKey, Any] = OrderedDict()
        # Per loaded pipeline: (prompt, negative, guided) → its text-encoder outputs.
        self._embeddings: dict[PipelineKey, OrderedDict[tuple[str, str, bool], Any]] = {}
        self._img2img: dict[PipelineKey, Any] = {}  # the loaded pipelines' image-to-image forms
        self._sampler = ""  # the scheduler of the last call, for the files' parameters

    @property
    def loaded(self) -> list[PipelineKey]:
        """Keys of the pipelines in memory, least recently used first."""
        return list(self._loaded)

    def loaded_pipeline(self, params: GenerationParams) -> Any | None:
        """The pipeline ``params`` would run on, if it is loaded and a single one (None for
        DeepFloyd IF's stages): what the benchmark's stage clock attaches to."""
        model = resolve_model(params.model, lora=params.lora)
        if model.kind == "if":
            return None
        return self._loaded.get(self._key(model, params.lora_scale))

    def pipeline(self, params: GenerationParams) -> Any:
        """The pipeline ``params`` runs on, loaded (with the optimisations) if it is not."""
        model = resolve_model(params.model, lora=params.lora)
        return self._pipeline(model, params.lora_scale)

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]:
        """Generate one image per spec, in order (see the module docstring for the steps)."""
        if not specs:
            return []
        model = resolve_model(params.model, lora=params.lora)
        run = self._run_if if model.kind == "if" else self._run_sd

        def generate(batch: Sequence[ImageSpec], seeds: Sequence[int]) -> list[Outcome]:
            return run(model, params, batch, seeds, control)

        if params.strength is not None:
            check_img2img(params, specs)
        images = self._generate_with_retries(specs, generate)
        return [dataclasses.replace(image, sampler=self._sampler) for image in images]

    # -- black images ------------------------------------------------------------------------

    def _generate_with_retries(
        self, specs: Sequence[ImageSpec], generate: Generate
    ) -> list[GeneratedImage]:
        """Run ``generate`` on all specs, then again on the black ones only, with new seeds,
        at most ``black_retries`` times. An image still black at the end comes back marked
        ``blocked``; the caller must not hand it over (see bot/app/cover.py)."""
        seeds = [spec.seed for spec in specs]
        outcomes = generate(specs, seeds)
        retries = [0] * len(specs)
        for attempt in range(1, self.black_retries + 1):
            black = [i for i, (_, is_black) in enumerate(outcomes) if is_black]
            if not black:
                break
            log.info("Regenerating %d black image(s), attempt %d", len(black), attempt)
            new_seeds = [retry_seed(specs[i].seed, attempt) for i in black]
            redone = generate([specs[i] for i in black], new_seeds)
            for i, seed, outcome in zip(black, new_seeds, redone, strict=True):
                outcomes[i], seeds[i], retries[i] = outcome, seed, attempt
        still_black = sum(is_black for _, is_black in outcomes)
        if still_black:
            log.warning("%d image(s) still black after %d retries", still_black, self.black_retries)
        return [
            GeneratedImage(spec=spec, image=image, seed=seed, black_retries=count, blocked=black)
            for spec, (image, black), seed, count in zip(
                specs, outcomes, seeds, retries, strict=True
            )
        ]

    # -- Stable Diffusion-style pipelines ----------------------------------------------------

    def _run_sd(
        self,
        model: ModelSpec,
        params: GenerationParams,
        specs: Sequence[ImageSpec],
        seeds: Sequence[int],
        control: RunControl,
    ) -> list[Outcome]:
        """One pipeline call for the whole batch (padded up to a compiled batch size)."""
        pipe = self._pipeline(model, params.lora_scale)
        self._sampler = type(pipe.scheduler).__name__
        steps, size = params.steps, {"width": params.width, "height": params.height}
        if params.strength is not None:
            pipe = self._img2img_pipeline(model, params.lora_scale, pipe)
            steps = img2img_steps(params)
            size = {
                "image": [init_image(spec, params.width, params.height) for spec in specs],
                "strength": params.strength,
            }
        if not model.negative_prompts:
            specs = [dataclasses.replace(spec, negative_prompt="") for spec in specs]
        wanted = len(specs)
        padded = self.optimizations.bucket(wanted)
        if padded > wanted:  # repeat the last image; its copies are dropped below
            specs = [*specs, *[specs[-1]] * (padded - wanted)]
            seeds = [*seeds, *[seeds[-1]] * (padded - wanted)]
            if "image" in size:
                size["image"] = [*size["image"], *[size["image"][-1]] * (padded - wanted)]
        self.optimizations.set_up_vae(pipe, padded, max(params.width, params.height))
        guided = params.guidance > 1  # diffusers' rule for classifier-free guidance
        prompts = self._prompt_inputs(pipe, model, params, specs, guided)

        def on_step_end(
            pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            # The scheduler may run a different number of steps than asked (e.g. strength).
            total = getattr(pipeline, "num_timesteps", None) or params.steps
            control.step(step + 1, total)  # raises RunInterrupted to stop the call
            every = self.optimizations.previews_every
            if every and (step + 1) % every == 0 and step + 1 < total:
                previews = _previews(pipeline, callback_kwargs["latents"])  # (B, 4, h, w)
                control.preview(step + 1, previews[:wanted])
            return callback_kwargs

        with _out_of_memory_as_ours(self.device):
            output = pipe(
                **prompts,
                generator=self._generators(seeds),
                num_inference_steps=steps,
                guidance_scale=params.guidance,
                **size,
                callback_on_step_end=on_step_end,
                output_type="np",  # floats: a NaN is still a NaN here, not yet a black picture
            )
        import numpy as np

        pixels = output.images[:wanted]  # (B, H, W, 3) in [0, 1]
        nan = [bool(np.isnan(image).any()) for image in pixels]
        images = pipe.image_processor.numpy_to_pil(np.nan_to_num(pixels))
        flagged = getattr(output, "nsfw_content_detected", None)
        return _outcomes(images, flagged and flagged[:wanted], nan=nan, dtype=pipe.unet.dtype)

    def _prompt_inputs(
        self,
        pipe: Any,
        model: ModelSpec,
        params: GenerationParams,
        specs: Sequence[ImageSpec],
        guided: bool,
    ) -> dict[str, Any]:
        """The pipeline's prompt arguments: the texts, or their cached text-encoder outputs."""
        capacity = self.optimizations.prompt_cache
        if not capacity:
            return {
                "prompt": [spec.prompt for spec in specs],
                "negative_prompt": [spec.negative_prompt for spec in specs],
            }
        import torch

        cache = self._embeddings.setdefault(self._key(model, params.lora_scale), OrderedDict())
        keys = [(spec.prompt, spec.negative_prompt, guided) for spec in specs]
        missing = list(dict.fromkeys(key for key in keys if key not in cache))
        if missing:
            # Outside the pipeline's own no_grad (only its __call__ has one) the encoder's
            # parameters require grad, and each cached row would hold the encoder's activations
            # through its grad_fn: tens of MB per prompt on a GPU, for as long as it is cached.
            with torch.no_grad():
                positive, negative = self._encode(pipe, missing, guided)
            for row, key in enumerate(missing):
                cache[key] = (
                    positive[row : row + 1],  # (1, tokens, width)
                    negative[row : row + 1] if negative is not None else None,
                )
        for key in keys:
            cache.move_to_end(key)
        while len(cache) > capacity:
            cache.popitem(last=False)
        inputs = {"prompt_embeds": torch.cat([cache[key][0] for key in keys])}  # (B, tokens, width)
        if guided:
            inputs["negative_prompt_embeds"] = torch.cat([cache[key][1] for key in keys])
        return inputs

    @staticmethod
    def _encode(pipe: Any, missing: Sequence[tuple[str, str, bool]], guided: bool) -> Any:
        """The text encoder's outputs for ``missing`` (prompt, negative, guided) keys."""
        return pipe.encode_prompt(
            [prompt for prompt, _, _ in missing],
            pipe._execution_device,
            1,
            guided,
            negative_prompt=[negative for _, negative, _ in missing] if guided else None,
        )

    def _img2img_pipeline(self, model: ModelSpec, lora_scale: float, pipe: Any) -> Any:
        """``pipe``'s image-to-image form, sharing its components (diffusers' ``from_pipe``)."""
        key = self._key(model, lora_scale)
        if key not in self._img2img:
            from diffusers import AutoPipelineForImage2Image

            self._img2img[key] = AutoPipelineForImage2Image.from_pipe(pipe)
            self._img2img[key].set_progress_bar_config(disable=True)
        return self._img2img[key]

    @staticmethod
    def _key(model: ModelSpec, lora_scale: float) -> PipelineKey:
        return (
            model.name,
            str(model.lora) if model.lora else None,
            lora_scale if model.lora else 1.0,
        )

    def _pipeline(self, model: ModelSpec, lora_scale: float) -> Any:
        """The loaded pipeline for ``model``, from the LRU cache or freshly loaded."""
        key = self._key(model, lora_scale)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        # Evict before loading: on a GPU the old weights must leave before the new ones fit.
        while len(self._loaded) >= self.max_loaded:
            evicted, _ = self._loaded.popitem(last=False)
            self._embeddings.pop(evicted, None)
            self._img2img.pop(evicted, None)
            log.info("Unloading %s", evicted)
            self._free_memory()
        log.info("Loading %s on %s", key, self.device)
        self._loaded[key] = self._load(model, lora_scale)
        return self._loaded[key]

    def _load(self, model: ModelSpec, lora_scale: float) -> Any:
        """Load one pipeline (a seam for tests that wrap the real pipeline)."""
        pipe = load_pipeline(
            model,
            device=self.device,
            cache_dir=self.cache_dir,
            allow_downloads=self.allow_downloads,
            lora_scale=lora_scale,
            half_precision=self.optimizations.half_precision,
        )
        # The tiny decoder goes in before the optimisations, so they apply to it too.
        if self.optimizations.wants_tiny_decoder(
            has_one=model.tiny_decoder is not None, device=self.device
        ):
            try:
                pipe.vae = load_tiny_decoder(
                    model,
                    device=self.device,
                    dtype=pipe.unet.dtype,
                    allow_downloads=self.allow_downloads,
                )
            except ModelUnavailable:
                if self.optimizations.decoder == "tiny":
                    raise  # asked for by name: say why it cannot be had
                log.info(
                    "No tiny decoder for %s in the cache; decoding with the full VAE", model.name
                )
        if self.optimizations.decoder_runtime != "torch":
            self._decode_outside_torch(pipe, model)
        self.optimizations.allow_recompiles(devices=_cuda_devices(), models=self.max_loaded)
        pipe = self.optimizations.apply(pipe)
        # The UNet goes to OpenVINO last: it is exported from the UNet the optimisations set up.
        from models.openvino_unet import use_openvino_unet  # torch and OpenVINO: loaded on use

        use_openvino_unet(pipe, model.name, self.optimizations, self.device, self.cache_dir)
        return pipe

    def _decode_outside_torch(self, pipe: Any, model: ModelSpec) -> None:
        """The tiny decoder's torch module swapped for OpenVINO's or ONNX Runtime's
        (models/exported_decoder.py), on a CPU; elsewhere, or with the full VAE, torch decodes
        and the log says why."""
        from models.exported_decoder import onnx_decoder, openvino_decoder

        runtime = self.optimizations.decoder_runtime
        vae = getattr(pipe, "vae", None)
        if self.device != "cpu" or type(vae).__name__ != "AutoencoderTiny":
            why = "not on a CPU" if self.device != "cpu" else "its tiny decoder is not loaded"
            log.warning("decoder_runtime=%s ignored for %s: %s", runtime, model.name, why)
            return
        if runtime == "openvino":
            bfloat16 = self.optimizations.bfloat16_on_cpu(pipe.unet)
            vae.decoder = openvino_decoder(vae, self.cache_dir, bfloat16=bfloat16)
        else:
            vae.decoder = onnx_decoder(vae, self.cache_dir)

    def _generators(self, seeds: Sequence[int]) -> list[Any]:
        """One generator per image, so each image's noise depends on its own seed only."""
        import torch

        # Always CPU generators, whatever the device: CUDA's random numbers differ from the
        # CPU's for one seed, so a reroll, a resume or a Ray worker on another device would make
        # other covers from the same seed (and MPS generators are not reliably seedable).
        # diffusers draws CPU noise and moves it to the device: a few MB once per call.
        return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    def unload_all(self) -> None:
        """Drop every loaded pipeline with its image-to-image forms and cached embeddings."""
        self._loaded.clear()
        self._embeddings.clear()
        self._img2img.clear()
        self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()  # pipelines hold reference cycles; collect them before emptying caches
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- DeepFloyd IF ------------------------------------------------------------------------

    def _run_if(
        self,
        model: ModelSpec,
        params: GenerationParams,
        specs: Sequence[ImageSpec],
        seeds: Sequence[int],
        control: RunControl,
    ) -> list[Outcome]:
        """DeepFloyd IF: stage I (T5 text encoder + 64 px pixel diffusion), then stage II
        (super-resolution to 256 px), each loaded with model CPU offload and stage I freed before
        stage II loads, as the playlist-cover paper had to do to fit in memory.

        Honest limits: this path needs DeepFloyd's gated weights (accept the licence on Hugging
        Face, then download them into the cache) and, in practice, a CUDA GPU (T5-XXL alone is
        ~10 GB in fp16). No test covers it: the weights cannot be fetched in CI. Stages are
        reloaded on every call (and on black-image retries); IF is slow here by design.
        ``params.width``/``height`` are ignored: IF makes 256 px squares. Progress counts the
        steps of both stages.
        """
        import diffusers

        assert model.repo_id is not None and model.stage2_repo_id is not None
        # IF needs all the memory there is: drop every SD pipeline and everything that holds
        # its modules or tensors (the image-to-image forms share its components, the cached
        # embeddings live on the device), or they stay on the GPU, and a stale img2img form
        # would be used after the next load.
        self.unload_all()
        dtype = torch_dtype(model, self.device)
        steps = params.steps if params.strength is None else img2img_steps(params)
        total = 2 * steps
        prompts = [spec.prompt for spec in specs]
        negatives = [spec.negative_prompt for spec in specs]
        self._sampler = "DDPMScheduler"  # both stages' (their scheduler configs)
        stage1_class, stage2_class = diffusers.IFPipeline, diffusers.IFSuperResolutionPipeline
        start: dict[str, Any] = {}
        if params.strength is not None:  # image-to-image: both stages start from the image
            stage1_class = diffusers.IFImg2ImgPipeline
            stage2_class = diffusers.IFImg2ImgSuperResolutionPipeline
            side = IF_OUTPUT_SIDE
            start = {
                "image": [init_image(spec, side, side) for spec in specs],
                "strength": params.strength,
            }

        # 1. Stage I: encode the prompts once (stage II reuses the embeddings), make 64 px.
        #    Freed however it ends: a cancel or an error must not leave T5 or the 4.3B UNet
        #    on the GPU for the next job.
        stage1 = self._load_if_stage(stage1_class, model.repo_id, model, dtype)
        try:
            prompt_embeds, negative_embeds = stage1.encode_prompt(
                prompts, negative_prompt=negatives, clean_caption=False
            )
            with _out_of_memory_as_ours(self.device):
                small = stage1(
                    **start,
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_embeds,
                    generator=self._generators(seeds),
                    num_inference_steps=steps,
                    guidance_scale=params.guidance,
                    output_type="pt",
                    callback=lambda step, _t, _x: control.step(step + 1, total),
                ).images  # (B, 3, 64, 64)
        finally:
            del stage1
            self._free_memory()

        # 2. Stage II: 64 → 256 px, without its own text encoder.
        stage2 = self._load_if_stage(
            stage2_class,
            model.stage2_repo_id,
            model,
            dtype,
            text_encoder=None,
        )
        try:
            with _out_of_memory_as_ours(self.device):
                output = stage2(
                    image=small,
                    **(
                        {"original_image": start["image"], "strength": start["strength"]}
                        if start
                        else {}
                    ),
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_embeds,
                    generator=self._generators(seeds),
                    num_inference_steps=steps,
                    output_type="pil",
                    callback=lambda step, _t, _x: control.step(steps + step + 1, total),
                )
        finally:
            del stage2
            self._free_memory()
        return _outcomes(output.images, getattr(output, "nsfw_detected", None))

    def _load_if_stage(
        self, pipeline_class: Any, repo_id: str, model: ModelSpec, dtype: Any, **kwargs: Any
    ) -> Any:
        pipe = load_hub_pipeline(
            pipeline_class,
            repo_id,
            dtype=dtype,
            variant=model.variant,
            allow_downloads=self.allow_downloads,
            **kwargs,
        )
        pipe.set_progress_bar_config(disable=True)
        if self.device.startswith("cuda"):
            gpu_id = int(self.device.partition(":")[2] or 0)
            pipe.enable_model_cpu_offload(gpu_id=gpu_id)  # one sub-model on the GPU at a time
        else:
            pipe.to(self.device)
        return pipe


def _cuda_devices() -> int:
    """CUDA devices of this machine: each may run a worker with its own compiled UNets."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def _previews(pipe: Any, latents: Any) -> list[Image.Image]:
    """Preview pictures of the latents: decoded by the tiny decoder when the pipeline has it
    (a few percent of a step here), else the rough linear map of models/postprocess.py."""
    vae = getattr(pipe, "vae", None)
    if type(vae).__name__ != "AutoencoderTiny":
        return latent_previews(latents)
    import torch

    with torch.no_grad():
        pixels = vae.decode(
            latents.to(vae.dtype) / vae.config.scaling_factor
        ).sample  # (B, 3, H, W)
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def _outcomes(
    images: Sequence[Image.Image],
    flagged: Sequence[bool] | None,
    *,
    nan: Sequence[bool] | None = None,
    dtype: Any = None,
) -> list[Outcome]:
    """Pair each image with "is it black": flagged by a safety checker, black pixels, or NaN
    (``nan``), which is logged as what it is: a black picture made of NaN is a numeric
    overflow, typically of half precision, not the safety checker's verdict."""
    flags = list(flagged) if flagged is not None else [False] * len(images)
    nans = list(nan) if nan is not None else [False] * len(images)
    for index in (i for i, is_nan in enumerate(nans) if is_nan):
        log.warning(
            "Image %d of the batch came out NaN, not a safety block: a numeric overflow in %s "
            "(try COVER_OPTIMIZATIONS=half_precision=off, or decoder=tiny)",
            index,
            str(dtype).removeprefix("torch.") if dtype is not None else "the pipeline",
        )
    return [
        (image, bool(flag) or is_nan or is_black(image))
        for image, flag, is_nan in zip(images, flags, nans, strict=True)
    ]


@contextmanager
def _out_of_memory_as_ours(device: str) -> Iterator[None]:
    """Turn CUDA's out-of-memory errors into :class:`OutOfMemory` (the queue then splits the
    batch), emptying the allocator's cache first so the halves have room – the named
    ``OutOfMemoryError`` and the allocation failures that arrive as a plain ``RuntimeError``
    (cuBLAS, cuDNN, a kernel launch). A sticky CUDA error becomes :class:`DeviceBroken`:
    this process cannot use the device again, and the queue replaces or drops the worker."""
    try:
        yield
    except RuntimeError as error:
        if is_broken_device(error):
            raise DeviceBroken(f"{device} failed: {error}") from error
        if not is_out_of_memory(error):
            raise
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        raise OutOfMemory(f"Out of memory on {device}: {error}") from error
