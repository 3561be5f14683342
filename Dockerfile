# One image for the bot, training and eval: change the command, not the image.
#   docker build -t playlist-cover .
#   docker run -d --gpus all --env-file .env -v playlist-cover-data:/data playlist-cover     (the bot)
#   docker run --rm --gpus all -v playlist-cover-data:/data playlist-cover python -m bot cover /app/examples/playlists/gym-hype.json
#   docker run --rm --gpus all -v playlist-cover-data:/data playlist-cover python -m training --help
# Programs run in /data, so training's runs/ and eval's eval-runs/ land on the volume too.
# A host folder instead of the named volume must belong to uid 10001 (the start-up check says so):
#   mkdir -p data && sudo chown 10001:10001 data && docker run ... -v "$PWD/data:/data" playlist-cover
# docs/deployment.md has the whole walk.
# Not built in CI (CI machines have no Docker engine).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# torch's CUDA build for the base image's CUDA (12.8): the wheel brings its own CUDA libraries,
# so they and the base image's must agree, and the host driver must support both.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# gcc, libc headers and Python's headers: Triton (compile=on) builds a small C driver at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv $VIRTUAL_ENV

WORKDIR /app
# Dependencies first so code edits don't reinstall torch.
COPY pyproject.toml README.md ./
COPY bot/__init__.py bot/
COPY models/__init__.py models/
COPY training/__init__.py training/
COPY eval/__init__.py eval/
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install '.[gen,bot,training,eval,ray,postgres]' && pip uninstall -y playlist-cover \
 && python -c "import torch; assert torch.version.cuda, 'torch is a CPU build'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

COPY . .
# /data and its folders belong to the image's user: a named volume starts as a copy of them.
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 cover \
 && mkdir -p /data/covers /data/cache /data/community-loras /data/hf \
 && chown -R cover:cover /data

USER cover
ENV COVER_DB_PATH=/data/playlist-cover.db \
    COVER_OUTPUT_DIR=/data/covers \
    COVER_CACHE_DIR=/data/cache \
    COVER_COMMUNITY_LORA_DIR=/data/community-loras \
    HF_HOME=/data/hf \
    TRITON_CACHE_DIR=/data/cache/triton
VOLUME ["/data"]
WORKDIR /data
# The Spotify OAuth callback server (docs/spotify.md): inside a container set
# COVER_CALLBACK_HOST=0.0.0.0 and publish the port to the reverse proxy, e.g. -p 127.0.0.1:8888:8888.
EXPOSE 8888
# Refuses to start when this GPU image sees no GPU (unless COVER_DEVICE=cpu or
# COVER_EXPECT_GPU=0) or cannot write /data, then runs the command in its place.
ENTRYPOINT ["python", "-m", "models.device_check"]
# The command runs as PID 1, where a signal without a handler is ignored: Python handles SIGINT
# (asyncio.run cancels the bot, which closes cleanly), so `docker stop` sends that, not SIGTERM.
STOPSIGNAL SIGINT
CMD ["python", "-m", "bot", "run"]
