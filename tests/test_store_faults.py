"""Chroma faults: unreachable server, corrupted or deleted store, and the server mode."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support import free_port

from roleplay.cards.schema import Character
from roleplay.cli import main
from roleplay.config import Settings
from roleplay.errors import StoreError
from roleplay.store import Retriever
from roleplay.store.client import forget_client, get_client

CARD = Character(id="faulty", name="Faulty", stories=[
    "Faulty:「(hums) The lighthouse keeper feeds the gulls at dawn.」",
    "Faulty:「(frowns) Never trust a map drawn in pencil.」",
])


def test_unreachable_server_is_one_store_error(roleplay_home, capsys):
    port = free_port()  # nothing listens here
    settings = Settings.from_env(chroma_url=f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError) as err:
        Retriever(settings).stories(CARD, ["gulls"])
    assert f"127.0.0.1:{port}" in str(err.value) and "chroma run" in str(err.value)
    with pytest.raises(StoreError):
        get_client(Settings.from_env(chroma_url="ftp://nowhere"))
    rc = main(["--chroma-url", f"http://127.0.0.1:{port}", "index", "sherlock"])
    out = capsys.readouterr()
    assert rc == 2 and out.err.startswith("error: cannot reach the Chroma server") and out.err.count("\n") == 1


def test_corrupted_store_errors_then_index_rebuilds(settings, capsys):
    Retriever(settings).index(CARD)
    forget_client(settings)  # as if the process restarted
    db = settings.chroma_dir / "chroma.sqlite3"
    db.write_bytes(b"this is not a database" * 500)

    with pytest.raises(StoreError) as err:
        Retriever(settings).stories(CARD, ["gulls"])
    assert "roleplay index" in str(err.value) and str(settings.chroma_dir) in str(err.value)
    # the CLI prints that one line and exits 2
    assert main(["retrieve", "sherlock", "hello"]) == 2
    assert "roleplay index" in capsys.readouterr().err

    stats = Retriever(settings).index(CARD)
    assert "rebuilt" in stats and stats["items"] == 2
    moved = [p for p in settings.chroma_dir.parent.iterdir() if p.name.startswith("chroma.corrupt-")]
    assert len(moved) == 1 and (moved[0] / "chroma.sqlite3").read_bytes().startswith(b"this is not")
    hits = Retriever(settings).stories(CARD, ["gulls at dawn"], k=1)
    assert "gulls" in hits[0].text


def test_deleted_store_is_rebuilt(settings):
    Retriever(settings).index(CARD)
    forget_client(settings)
    shutil.rmtree(settings.chroma_dir)
    # The next use finds no index for the card and builds it again from the card.
    hits = Retriever(settings).stories(CARD, ["pencil map"], k=1)
    assert "pencil" in hits[0].text
    assert (settings.chroma_dir / "chroma.sqlite3").is_file()


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on a free loopback port (stopped after the module)."""
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        pytest.skip("the chroma CLI is not installed in this environment")
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([str(exe), "run", "--path", str(data / "db"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma run did not start: {(data / 'server.log').read_text()[-500:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_server_mode_same_code_path(chroma_server, roleplay_home):
    settings = Settings.from_env(chroma_url=chroma_server)
    r = Retriever(settings)
    assert r.index(CARD)["items"] == 2
    assert r.index(CARD)["unchanged"] is True
    hits = r.stories(CARD, ["lighthouse gulls"], k=1)
    assert "lighthouse" in hits[0].text
    # nothing was written to the embedded store
    assert not settings.chroma_dir.exists()


def test_damaged_vector_files_are_rebuilt_by_index(settings):
    import numpy as np

    r = Retriever(settings)
    r.index(CARD)
    # Past Chroma's sync threshold (1,000) the vectors live in HNSW files on disk:
    # pad the collection with filler rows so those files exist, then damage them.
    col = r._collection(CARD.id, create=False)
    filler = np.random.default_rng(0).standard_normal((1100, 512)).astype(np.float32)
    col.add(ids=[f"filler{i}" for i in range(1100)], embeddings=filler,
            documents=[f"filler {i}" for i in range(1100)], metadatas=[{"source": "filler"}] * 1100)
    forget_client(settings)
    damaged = [f for d in settings.chroma_dir.iterdir() if d.is_dir() for f in d.iterdir()]
    assert damaged
    for f in damaged:
        f.write_bytes(b"\x80junk" * 64)

    with pytest.raises(StoreError, match="roleplay index"):
        Retriever(settings).stories(CARD, ["gulls"])
    stats = Retriever(settings).index(CARD)  # same card: the fingerprint alone would say "unchanged"
    assert stats["rebuilt"] == "collection rebuilt" and stats["items"] == 2
    assert "gulls" in Retriever(settings).stories(CARD, ["lighthouse gulls"], k=1)[0].text
