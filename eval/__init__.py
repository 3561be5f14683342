"""Evaluation: FID, KID and CLIP score, and seed 000's FID study (``python -m eval``).

Modules: ``metrics`` (pure maths), ``images`` (files, the split, clean-fid's resize),
``features`` (the Inception network, cached extraction), ``clip_score``, ``study`` (generate →
measure) and ``report`` (Markdown table and chart). See ``docs/eval.md``.
"""
