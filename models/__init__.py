"""Generation library: model registry and loading, the async GPU queue, pipelines and image
post-processing. Knows nothing of Discord; the CLI, the bot, training and eval all call it.

torch and diffusers are imported lazily, inside the functions that need them.
"""
