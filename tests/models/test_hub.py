"""`python -m bot models` and `models pull` against a local fake hub (tests/fakes/hub.py).

The pull runs the real CLI in a subprocess: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE
once, at import, and tests/conftest.py switches the hub off for this whole session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.hub import FakeHub, run_in_thread

pytestmark = pytest.mark.slow
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SMALL = "OFA-Sys/small-stable-diffusion-v0"
IF1, IF2 = "DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0"
TAESD = "madebyollin/taesd"
TOKEN = "hf_fake_test_token_for_the_local_hub"


@pytest.fixture(scope="session")
def served(
    standin_hub: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, str]]:
    """The session's stand-ins (tests/conftest.py), served as the fake hub's repos; id ->
    (snapshot folder, sha). The fake only reads them. TAESD's, like the real repository, also
    carries the original taesd_*.pth files and a .bin copy, which a pull must leave out."""
    import shutil

    from modeltools.standins import REAL_REPOS, repo_folder, revision_of, write_tiny_decoder_standin

    repos = {
        repo.repo_id: (
            repo_folder(standin_hub, repo.repo_id) / "snapshots" / revision_of(repo.repo_id),
            revision_of(repo.repo_id),
        )
        for name in ("sd15", "small-sd", "deepfloyd-if")
        for repo in REAL_REPOS[name]
    }
    taesd = tmp_path_factory.mktemp("taesd-served")
    shutil.copytree(
        write_tiny_decoder_standin(tmp_path_factory.mktemp("taesd-hub")), taesd, dirs_exist_ok=True
    )
    for extra in ("taesd_decoder.pth", "taesd_encoder.pth", "diffusion_pytorch_model.bin"):
        (taesd / extra).write_bytes(b"not needed by a diffusers load")
    repos[TAESD] = (taesd, "7" * 40)
    return repos


@pytest.fixture
def hub(served):
    fake = FakeHub()
    for repo_id, (folder, sha) in served.items():
        fake.add(repo_id, folder, sha, token=TOKEN if repo_id.startswith("DeepFloyd/") else None)
    url, stop = run_in_thread(fake)
    fake.url = url  # type: ignore[attr-defined]
    yield fake
    stop()


# `python -m bot`, with huggingface_hub's read size at 1 MiB instead of 10: it keeps only whole
# chunks of a dropped download, and the stand-ins' files are a few MB.
CHUNK = 1 << 20
_LAUNCH = (
    f"import sys, huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = {CHUNK}; "
    "from bot.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def cli(hub, home: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DISABLE_XET="1",
    )
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-c", _LAUNCH, "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshot_files(home: Path, repo_id: str) -> set[str]:
    snapshots = home / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return {
        p.relative_to(s).as_posix()
        for s in snapshots.iterdir()
        for p in s.rglob("*")
        if p.is_file()
    }


def expected(folder: Path, *, variant: str | None, skip: tuple[str, ...] = ()) -> set[str]:
    """Computed independently of models/hub.py from the served folder: configs of every non-null
    component, and per component the variant's weights if it has them, else the plain ones."""
    import json

    index = json.loads((folder / "model_index.json").read_text())
    out = {"model_index.json"}
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or value[0] is None or key in skip:
            continue
        names = [p.name for p in (folder / key).iterdir()]
        out |= {f"{key}/{n}" for n in names if n.endswith((".json", ".txt", ".model"))}
        st = [n for n in names if n.endswith(".safetensors")] or [
            n for n in names if n.endswith(".bin")
        ]
        var = [n for n in st if variant and f".{variant}." in n]
        out |= {f"{key}/{n}" for n in (var or [n for n in st if ".fp16." not in n])}
    return out


def test_pull_sd15_fetches_only_what_the_pipeline_needs_and_lists_it(hub, served, tmp_path):
    before = cli(
        hub,
        tmp_path,
    )
    assert before.returncode == 0, before.stderr
    row = next(line for line in before.stdout.splitlines() if line.startswith("sd15 "))
    assert row.split()[1] == "no"
    # Every row's second column starts under its header's, the longest preset name included.
    presets, support = before.stdout.split("\n\n")
    for table in (presets, support):
        header, *rows = table.splitlines()
        column = header.index(" cached") + 1
        assert all(r[column - 1] == " " and r[column] != " " for r in rows), table

    done = cli(hub, tmp_path, "pull", "sd15", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    files = snapshot_files(tmp_path, SD15)
    assert files == expected(served[SD15][0], variant=None)
    assert not any(".fp16." in f or f.endswith((".bin", ".ckpt")) for f in files)
    fetched = hub.fetched(SD15)
    assert "v1-5-pruned.safetensors" not in fetched and "v1-5-pruned-emaonly.ckpt" not in fetched
    assert not any(f.endswith(".bin") or f == "README.md" for f in fetched)

    # The tiny decoder comes along (decoder=auto takes it on a CPU): its config and weights only.
    assert snapshot_files(tmp_path, TAESD) == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert not any(f.endswith(".pth") for f in hub.fetched(TAESD))

    after = cli(hub, tmp_path)
    row = next(line for line in after.stdout.splitlines() if line.startswith("sd15 "))
    # Cached, and still known for what the fake hub served: a stand-in (its marker is pulled).
    assert row.split()[1:3] == ["stand-in", "full"], row
    tiny_row = next(line for line in after.stdout.splitlines() if line.startswith("taesd "))
    assert tiny_row.split()[1] == "stand-in", tiny_row
    assert "models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots/" in row
    assert "KB" in row or "MB" in row

    # the pulled cache loads with diffusers, offline
    code = (
        "import diffusers; p = diffusers.DiffusionPipeline.from_pretrained("
        f"{SD15!r}, local_files_only=True); print(type(p).__name__)"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert loaded.stdout.strip() == "StableDiffusionPipeline", loaded.stderr[-2000:]


def test_pull_for_cuda_takes_fp16_and_small_sd_falls_back_to_bin(hub, served, tmp_path):
    done = cli(hub, tmp_path, "pull", "sd15", "--variant", "fp16")
    assert done.returncode == 0, done.stderr
    files = snapshot_files(tmp_path, SD15)
    assert files == expected(served[SD15][0], variant="fp16")
    assert any(".fp16.safetensors" in f for f in files)
    assert not any(f.endswith(".safetensors") and ".fp16." not in f for f in files)

    hub.requests.clear()
    done = cli(hub, tmp_path, "pull", "small-sd", "--variant", "fp16", "--no-tiny-decoder")
    assert done.returncode == 0, done.stderr
    assert not [r for r in hub.requests if r[1] == TAESD]
    files = snapshot_files(tmp_path, SMALL)
    assert files == expected(served[SMALL][0], variant=None)
    assert "unet/diffusion_pytorch_model.bin" in files or "text_encoder/pytorch_model.bin" in files


def test_an_interrupted_pull_resumes_and_fetches_only_the_rest(hub, served, tmp_path):
    folder = served[SD15][0]
    big = max(
        (p for p in folder.rglob("*.safetensors") if ".fp16." not in p.name and p.parent != folder),
        key=lambda p: p.stat().st_size,
    )
    name = big.relative_to(folder).as_posix()
    half = big.stat().st_size // 2
    # Cut once: huggingface_hub resumes in the same run with a Range request from the cut.
    hub.drop_after[name] = half
    once = cli(hub, tmp_path / "once", "pull", "sd15", "--device", "cpu")
    assert once.returncode == 0, once.stderr
    kept = half // CHUNK * CHUNK
    assert kept > 0
    assert [r for r in hub.ranges if r[0] == name] == [(name, 0), (name, kept)]
    # Cut on every try: this pull fails. huggingface_hub 2.4 downloads into a per-process temp
    # file (file_download.py, _download_to_tmp_and_move), so a new run restarts that one file;
    # what the next pull must not do is fetch again the files the first one finished.
    hub.ranges.clear()
    hub.drop_after[name], hub.drops_left[name] = half, 100
    first = cli(hub, tmp_path, "pull", "sd15", "--device", "cpu")
    del hub.drop_after[name]
    assert first.returncode == 1, first.stderr
    assert first.stderr.strip().splitlines()[-1].startswith("error: "), first.stderr
    done_before = snapshot_files(tmp_path, SD15)
    assert name not in done_before and len(done_before) > 1
    hub.requests.clear()
    second = cli(hub, tmp_path, "pull", "sd15", "--device", "cpu")
    assert second.returncode == 0, second.stderr
    assert hub.fetched(SD15) == expected(folder, variant=None) - done_before
    assert snapshot_files(tmp_path, SD15) == expected(folder, variant=None)
    blob = next(p for p in (tmp_path / "hub").rglob(name) if p.is_file())
    assert blob.read_bytes() == big.read_bytes()


def test_gated_if_says_how_to_get_access_then_pulls_both_stages_with_a_token(hub, served, tmp_path):
    refused = cli(hub, tmp_path, "pull", "deepfloyd-if")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), refused.stderr
    assert "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0" in lines[0]
    assert "HF_TOKEN" in lines[0] and "hf auth login" in lines[0]

    done = cli(hub, tmp_path, "pull", "deepfloyd-if", "--device", "cpu", token=TOKEN)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert snapshot_files(tmp_path, IF1) == expected(served[IF1][0], variant=None)
    stage2 = snapshot_files(tmp_path, IF2)
    assert stage2 == expected(served[IF2][0], variant=None, skip=("text_encoder",))
    assert "tokenizer/spiece.model" in stage2


def test_unknown_repo_and_built_in_models_are_one_sentence(hub, tmp_path):
    del hub.repos[SMALL]
    missing = cli(hub, tmp_path, "pull", "small-sd")
    assert missing.returncode == 1 and "has no model" in missing.stderr, missing.stderr
    built_in = cli(hub, tmp_path, "pull", "embedded")
    assert built_in.returncode == 1 and "nothing to download" in built_in.stderr


def test_no_network_is_one_sentence(tmp_path):
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    class Nowhere:
        url = f"http://127.0.0.1:{port}"

    result = cli(Nowhere, tmp_path, "pull", "sd15")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "could not be fetched" in last, result.stderr


def test_sharded_weights_take_their_index_of_the_same_variant():
    # IF-I-XL's real text encoder is sharded, in full precision and fp16 (no stand-in has shards)
    from models.hub import needed_files

    enc = "text_encoder/"
    files = [
        "model_index.json",
        "README.md",
        enc + "config.json",
        enc + "model-00001-of-00002.safetensors",
        enc + "model-00002-of-00002.safetensors",
        enc + "model.safetensors.index.json",
        enc + "model.fp16-00001-of-00002.safetensors",
        enc + "model.fp16-00002-of-00002.safetensors",
        enc + "model.safetensors.index.fp16.json",
        enc + "pytorch_model-00001-of-00002.bin",
        enc + "pytorch_model.bin.index.json",
    ]
    index = {
        "_class_name": "IFPipeline",
        "text_encoder": ["transformers", "T5EncoderModel"],
        "safety_checker": [None, None],
    }
    assert set(needed_files(IF1, files, index, variant="fp16")) == {
        "model_index.json",
        enc + "config.json",
        enc + "model.fp16-00001-of-00002.safetensors",
        enc + "model.fp16-00002-of-00002.safetensors",
        enc + "model.safetensors.index.fp16.json",
    }
    assert set(needed_files(IF1, files, index, variant=None)) == {
        "model_index.json",
        enc + "config.json",
        enc + "model-00001-of-00002.safetensors",
        enc + "model-00002-of-00002.safetensors",
        enc + "model.safetensors.index.json",
    }
