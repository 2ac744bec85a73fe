"""``roleplay webui --api``: one process serves the web UI and the OpenAI-compatible API.

The real command runs as a subprocess; a browser-side chat (through the Gradio client, as
the page does) and an API chat (through the official ``openai`` client) run at the same
time against the one loaded model, and both get their reply.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from support import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def webui_with_api(roleplay_home):
    port = free_port()
    env = {**os.environ, "ROLEPLAY_HOME": str(roleplay_home)}
    proc = subprocess.Popen([sys.executable, "-m", "roleplay", "webui", "--api", "--port", str(port)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError("webui --api exited: " + proc.stderr.read().decode()[-800:])
        try:
            if httpx.get(base + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("webui --api did not start")
        time.sleep(0.3)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_one_process_serves_the_page_and_the_api_together(webui_with_api):
    import openai
    from gradio_client import Client

    base = webui_with_api
    page = httpx.get(base + "/", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    models = [m["id"] for m in httpx.get(base + "/v1/models", timeout=10).json()["data"]]
    assert "roleplay/sherlock" in models

    results: dict[str, str] = {}

    def api_chat() -> None:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
        reply = client.chat.completions.create(model="roleplay/sherlock", max_tokens=12, temperature=0,
                                               messages=[{"role": "user", "content": "Good morning, Holmes."}])
        results["api"] = reply.choices[0].message.content

    thread = threading.Thread(target=api_chat)
    thread.start()
    ui = Client(base + "/", verbose=False)
    endpoints = ui.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert endpoints  # the page's own endpoints are there beside /v1
    thread.join(timeout=300)
    assert results.get("api"), "the API chat got no reply while the web UI was up"
