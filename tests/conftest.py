import importlib.util
import json
import shutil
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fake_hub():
    """huggingface_hub's HTTP client replaced by a recording stand-in of the Hub's API."""
    calls = []

    def handler(request):
        is_ndjson = request.headers.get("content-type", "").startswith("application/x-ndjson")
        body = [json.loads(line) for line in request.content.splitlines() if line] if is_ndjson else (
            json.loads(request.content) if request.content else None)  # fmt: skip
        calls.append({"method": request.method, "path": request.url.path, "body": body,
                      "authorization": request.headers.get("authorization")})  # fmt: skip
        path = request.url.path
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{body['organization']}/{body['name']}"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]
            return httpx2.Response(200, json={"files": files})
        if "/commit/" in path:
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/me/vqgen-fmnist/commit/" + "a" * 40, "commitOid": "a" * 40})
        return httpx2.Response(404, json={"error": "not found"})

    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler)))
    yield calls
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


@pytest.fixture
def load_benchmark():
    """Imports a script of benchmarks/ (a folder of scripts, not a package) from its file."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def copy_run():
    """copy_run(source, destination, up_to_step): a run folder holding `source`'s checkpoints up to
    `up_to_step`, as if the run had stopped there (for resume tests)."""
    from stage1_tokenizer.common.training import list_checkpoints

    def copy(source: Path, destination: Path, up_to_step: int) -> Path:
        for checkpoint in list_checkpoints(source):
            if int(checkpoint.name.split("-")[1]) <= up_to_step:
                shutil.copytree(checkpoint, destination / "checkpoints" / checkpoint.name)
        shutil.copy(source / "vqgen_run.json", destination / "vqgen_run.json")
        return destination

    return copy
