"""Stand-ins for the hub presets: the real repositories' classes and cache layout, tiny weights.

A stand-in is what ``huggingface_hub`` would have left in a Hugging Face cache after downloading
``small-sd``, ``sd15``, ``sd-turbo`` or ``deepfloyd-if`` – ``models--ORG--NAME/refs/main``,
``blobs/`` and ``snapshots/<revision>/`` with ``model_index.json`` and one folder per component –
with the *same* pipeline and component classes, scheduler configs, tokenizer kinds, weight file
formats and variants as the real repository, but dimensions shrunk so that a 2-core CPU runs
one at its native size in seconds. The weights are seeded random values: a stand-in proves that
our code loads and drives the real model's structure, not that the images are any good.

What our code reads, per preset (``REAL_REPOS`` records where a stand-in departs from it):

* ``sd15``: ``StableDiffusionPipeline`` with ``PNDMScheduler``, CLIP text encoder and BPE
  tokenizer, an 8x ``AutoencoderKL``, ``StableDiffusionSafetyChecker`` and a
  ``CLIPImageProcessor``; safetensors weights plus the ``fp16`` variant, plus ``.bin`` copies
  and single-file checkpoints at the top level that a download must skip.
* ``small-sd``: the same pipeline, but weights as ``.bin`` only, no ``fp16`` variant, and the
  feature extractor named ``CLIPFeatureExtractor`` (a class transformers 5 no longer has).
* ``sd-turbo``: SD 2.1's shape – ``EulerDiscreteScheduler`` with trailing timesteps, linear
  attention projections, a GELU text encoder padding with ``!`` – no safety checker; ``fp16``.
* ``deepfloyd-if``: two repositories. Stage I (``IFPipeline``: T5 encoder with a SentencePiece
  ``spiece.model`` tokenizer, a 64 px pixel-space UNet with learned variance,
  ``IFSafetyChecker``, ``IFWatermarker``) and stage II (``IFSuperResolutionPipeline``, 64 → 256
  px, with its own image-noising scheduler); both with ``fp16`` variants.

The support models of seed 003's pipeline (models/support.py) have stand-ins too
(:func:`write_support_standin`, ``SUPPORT_REPOS``): BLIP base (``BlipForConditionalGeneration``,
a BERT WordPiece tokenizer with BLIP's ``[DEC]``), CLIP ViT-L/14 (``CLIPModel``, the real CLIP
BPE) and MagicPrompt (``GPT2LMHeadModel``, a GPT-2 byte-level BPE trained here with the
``tokenizers`` library), each as a transformers repository: everything at the top level.

Every stand-in says what it is: its top-level ``model_index.json`` (or ``config.json``) carries
:data:`models.hub.STANDIN_FIELD`, which no real repository has, so ``python -m bot models`` lists
it as a stand-in and ``auto`` never picks one (naming the preset still loads it).

``safety="flag-all"`` builds a safety checker that flags every image (what real checkers do to
some honest prompts), so the black-image path can be tested end to end.

The package: ``cache.py`` lays files out as a hub download does; ``diffusion.py`` builds the
four presets' pipelines; ``support.py`` the support models and the tiny decoder;
``__main__.py`` is ``python -m modeltools.standins``.
"""

from modeltools.standins.cache import RealRepo, Safety, repo_folder, revision_of
from modeltools.standins.diffusion import REAL_REPOS, TEXT_WIDTH, standin_names, write_standin
from modeltools.standins.support import (
    SUPPORT_REPOS,
    TINY_DECODER_REPO,
    write_support_standin,
    write_tiny_decoder_standin,
)

__all__ = [
    "REAL_REPOS",
    "SUPPORT_REPOS",
    "TEXT_WIDTH",
    "TINY_DECODER_REPO",
    "RealRepo",
    "Safety",
    "repo_folder",
    "revision_of",
    "standin_names",
    "write_standin",
    "write_support_standin",
    "write_tiny_decoder_standin",
]
