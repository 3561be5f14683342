# One image for the bot, training and eval: change the command, not the image.
#   docker build -t playlist-cover .
#   docker run -d --gpus all --env-file .env -v $PWD/data:/data playlist-cover        (the bot)
#   docker run --rm --gpus all -v $PWD/data:/data playlist-cover python -m bot cover examples/playlists/gym-hype.json
#   docker run --rm --gpus all -v $PWD/data:/data playlist-cover python -m training --help
# Not built in CI (CI machines have no Docker engine).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv $VIRTUAL_ENV

WORKDIR /app
# Dependencies first so code edits don't reinstall torch. torch from PyPI is the CUDA build here.
COPY pyproject.toml README.md ./
COPY bot/__init__.py bot/
COPY models/__init__.py models/
COPY training/__init__.py training/
COPY eval/__init__.py eval/
RUN pip install torch==2.13.0 && pip install '.[gen,bot,training,eval,ray]' && pip uninstall -y playlist-cover

COPY . .
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 cover \
 && mkdir -p /data && chown cover /data

USER cover
ENV COVER_DB_PATH=/data/playlist-cover.db \
    COVER_OUTPUT_DIR=/data/covers \
    COVER_CACHE_DIR=/data/cache \
    COVER_COMMUNITY_LORA_DIR=/data/community-loras \
    HF_HOME=/data/hf
VOLUME ["/data"]
# The Spotify OAuth callback server (README "Link your Spotify account"): inside a container set
# COVER_CALLBACK_HOST=0.0.0.0 and publish the port to the reverse proxy, e.g. -p 127.0.0.1:8888:8888.
EXPOSE 8888
CMD ["python", "-m", "bot", "run"]
