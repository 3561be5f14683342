"""A local fake of the Hugging Face hub for `models pull` tests (tests/models/test_hub.py).

It serves repositories from folders (a stand-in snapshot from modeltools/standins/) on
127.0.0.1 with the endpoints huggingface_hub 2.4 calls: ``GET /api/models/{repo}/revision/{rev}``
(model_info: sha and siblings), ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ETag,
X-Repo-Commit and Content-Length, honouring ``Range`` (how huggingface_hub resumes an
``.incomplete`` file). No ``X-Xet-Hash`` header is sent, so the client takes the plain HTTP
path. Gated repos answer 401 ``X-Error-Code: GatedRepo`` without the right Bearer token, unknown
repos 404 ``RepoNotFound``, as the real hub. ``drop_after[path] = n`` cuts the connection after
n bytes of that file, once (``drops_left[path]`` times if set). Every request is logged in ``requests``.

With ``?blobs=true`` (``model_info(files_metadata=True)``) the siblings carry their size, blob id
and LFS info, as the real hub's. A hostile or broken hub, for the hardening of `models pull`
(tests/models/test_hub_hostile.py): ``info_body[repo]`` replaces the model info answer with raw
bytes; ``extra_siblings[repo]`` lists names that are not in the folder (``..``, absolute, 100 KB
long); a sha given to :meth:`FakeHub.add` is served verbatim (in the info and X-Repo-Commit);
``oversize[path] = n`` streams n bytes of that file in place of its listed size (chunked, no
Content-Length); ``drip[path] = s`` sends that file one byte every s seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class FakeHub:
    repos: dict[str, tuple[Path, str]] = field(default_factory=dict)  # id -> (folder, sha)
    gated: dict[str, str] = field(default_factory=dict)  # id -> the token that opens it
    drop_after: dict[str, int] = field(default_factory=dict)
    drops_left: dict[str, int] = field(default_factory=dict)  # how often to cut (default once)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, repo, path
    ranges: list[tuple[str, int]] = field(default_factory=list)  # (path, first byte) of GETs
    info_body: dict[str, bytes] = field(default_factory=dict)  # repo -> raw model info answer
    extra_siblings: dict[str, list[str]] = field(default_factory=dict)  # repo -> listed names
    oversize: dict[str, int] = field(default_factory=dict)  # path -> bytes actually streamed
    drip: dict[str, float] = field(default_factory=dict)  # path -> seconds between bytes
    sent: dict[str, int] = field(default_factory=dict)  # path -> bytes a misbehaviour wrote

    def add(self, repo_id: str, folder: Path, sha: str, *, token: str | None = None) -> None:
        self.repos[repo_id] = (folder, sha)
        if token:
            self.gated[repo_id] = token

    def fetched(self, repo_id: str) -> set[str]:
        return {p for m, r, p in self.requests if m == "GET" and r == repo_id and p}

    def _arrive(
        self, request: web.Request, kind: str, path: str = ""
    ) -> tuple[str, web.Response | None]:
        """Log a request and say which repo it names, with the refusal the hub would send
        (unknown repo, gated without the right token), if any."""
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        self.requests.append((kind, repo_id, path))
        return repo_id, self._check(request, repo_id)

    def _check(self, request: web.Request, repo_id: str) -> web.Response | None:
        if repo_id not in self.repos:
            return web.Response(
                status=404,
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
        token = self.gated.get(repo_id)
        if token and request.headers.get("Authorization") != f"Bearer {token}":
            return web.Response(
                status=401,
                headers={
                    "X-Error-Code": "GatedRepo",
                    "X-Error-Message": f"Access to model {repo_id} is restricted. You must have "
                    "access to it and be authenticated to access it. Please log in.",
                },
            )
        return None

    async def model_info(self, request: web.Request) -> web.StreamResponse:
        repo_id, refused = self._arrive(request, "INFO")
        if refused:
            return refused
        if repo_id in self.info_body:
            return web.Response(body=self.info_body[repo_id], content_type="application/json")
        folder, sha = self.repos[repo_id]
        blobs = request.query.get("blobs", "").lower() == "true"
        siblings = [
            self._sibling(folder, p, blobs) for p in sorted(folder.rglob("*")) if p.is_file()
        ]
        siblings += [
            {"rfilename": name, "size": 10} for name in self.extra_siblings.get(repo_id, [])
        ]
        return web.json_response(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "siblings": siblings,
                "gated": "manual" if repo_id in self.gated else False,
                "private": False,
            }
        )

    @staticmethod
    def _sibling(folder: Path, path: Path, blobs: bool) -> dict[str, object]:
        sibling: dict[str, object] = {"rfilename": path.relative_to(folder).as_posix()}
        if blobs:  # what the hub adds for ?blobs=true
            data = path.read_bytes()
            sibling.update(size=len(data), blobId=hashlib.sha1(data).hexdigest())
            if path.suffix in (".safetensors", ".bin", ".ckpt", ".model"):
                sibling["lfs"] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
        return sibling

    async def tree(self, request: web.Request) -> web.StreamResponse:
        """``list_repo_tree`` (snapshot_download lists a revision's files with it): one page of
        files with size and oid, LFS info for weights, as the hub answers."""
        repo_id, refused = self._arrive(request, "TREE")
        if refused:
            return refused
        folder, _ = self.repos[repo_id]
        entries = []
        for p in sorted(folder.rglob("*")):
            if not p.is_file():
                continue
            data = p.read_bytes()
            entry = {
                "type": "file",
                "path": p.relative_to(folder).as_posix(),
                "size": len(data),
                "oid": hashlib.sha1(data).hexdigest(),
            }
            if p.suffix in (".safetensors", ".bin", ".ckpt", ".model"):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(entry)
        return web.json_response(entries)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        repo_id, refused = self._arrive(request, request.method, path)
        if refused:
            return refused
        folder, sha = self.repos[repo_id]
        file = folder / path
        if not file.is_file():
            return web.Response(
                status=404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}
            )
        data = file.read_bytes()
        etag = (  # LFS files: sha256, as the hub; the others: git's sha1
            hashlib.sha256(data).hexdigest()
            if file.suffix in (".safetensors", ".bin", ".ckpt", ".model")
            else (hashlib.sha1(data).hexdigest())
        )
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        start = 0
        ranged = request.headers.get("Range", "")
        if ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0])
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        if path in self.oversize or path in self.drip:
            return await self._misbehave(request, path, headers)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        self.ranges.append((path, start))
        cut = self.drop_after.get(path)
        if cut is not None:
            self.drops_left[path] = self.drops_left.get(path, 1) - 1
            if self.drops_left[path] <= 0:
                del self.drop_after[path]
            await response.write(body[: max(cut - start, 0)])  # ``cut``: a byte of the file
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-file, once
            return response
        await response.write(body)
        await response.write_eof()
        return response

    async def _misbehave(
        self, request: web.Request, path: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Serve ``path`` as a hostile hub would: far more bytes than it listed, or a drip."""
        del headers["Content-Length"]  # chunked: the client learns the size only by reading
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        self.ranges.append((path, 0))
        try:
            if path in self.oversize:
                block = b"\0" * (64 << 10)
                for _ in range(self.oversize[path] // len(block)):
                    await response.write(block)
                    self.sent[path] = self.sent.get(path, 0) + len(block)
            else:
                for _ in range(10_000):  # ends once the client hangs up
                    await response.write(b"\0")
                    self.sent[path] = self.sent.get(path, 0) + 1
                    await asyncio.sleep(self.drip[path])
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the client stopped reading: what we expect
            pass
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self.model_info)
        app.router.add_get("/api/models/{org}/{name}", self.model_info)
        app.router.add_get("/api/models/{org}/{name}/tree/{rev}", self.tree)
        app.router.add_route("HEAD", "/{org}/{name}/resolve/{rev}/{path:.+}", self.resolve)
        app.router.add_get("/{org}/{name}/resolve/{rev}/{path:.+}", self.resolve, allow_head=False)
        return app


def run_in_thread(hub: FakeHub):
    """Serve ``hub`` on 127.0.0.1 (ephemeral port) from a thread; returns (url, stop)."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def start() -> None:
        runner = web.AppRunner(hub.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state["url"], state["runner"] = f"http://127.0.0.1:{port}", runner
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(10)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)  # type: ignore[union-attr]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return state["url"], stop
