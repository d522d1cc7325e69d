"""The files of a Hugging Face Space that serves a bundle's web page: `push_to_hub(..., space=True)`
writes them next to the model upload.

A Space is a repository the Hub runs: its README.md says which SDK (Gradio, at the version the app
was tested with here), app.py starts the app, and requirements.txt lists what to install. vqgen
is not on PyPI, so the Space carries its source (the three packages, about 0.6 MB) and installs
vqgen's own requirements; app.py then runs `pipelines.app` on the model the Space names, the same
app as `python -m pipelines.app --model user/name` on a laptop.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

SOURCE_PACKAGES = ("stage1_tokenizer", "stage2_prior", "pipelines")
REPO = Path(__file__).resolve().parent.parent
SPACE_PORT = 7860  # where the Hub looks for a Space's server
APP_EXTRA = 'pip install -e ".[app]"'


def space_url(space_id: str) -> str:
    return f"https://huggingface.co/spaces/{space_id}"


def gradio_version() -> str:
    """The installed Gradio's version: the one the Space asks the Hub for."""
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"a Space runs the app, made with Gradio, which is not installed: {APP_EXTRA}") from None


def space_requirements() -> list[str]:
    """vqgen's run-time requirements, as installed (its extras left out; Gradio comes with the SDK)."""
    try:
        requires = importlib.metadata.requires("vqgen") or []
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"vqgen is not installed, so its requirements for the Space are unknown: {APP_EXTRA}") from None
    return [requirement for requirement in requires if "extra ==" not in requirement]


def check_space_tools() -> None:
    """Fails before any upload if the Space's files could not be written."""
    gradio_version()
    space_requirements()


def write_space(folder: Path, model_id: str, space_id: str, modality: str = "image") -> None:
    """README.md (the Space's settings), app.py, requirements.txt and vqgen's source in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    name = space_id.split("/")[-1]
    summary = f"vqgen {'speech' if modality == 'audio' else 'images'} from {model_id}"[:60]  # the Hub's limit
    (folder / "README.md").write_text(
        f"""---
title: {name}
emoji: {"🗣️" if modality == "audio" else "🎨"}
colorFrom: indigo
colorTo: gray
sdk: gradio
sdk_version: {gradio_version()}
app_file: app.py
pinned: false
license: apache-2.0
models:
- {model_id}
short_description: {summary}
---

# {name}

The web page of the vqgen model [{model_id}](https://huggingface.co/{model_id}): the same app as
`python -m pipelines.app --model {model_id}` on your own machine. A private model needs an
`HF_TOKEN` secret in this Space's settings.
""",
        encoding="utf-8",
    )
    (folder / "app.py").write_text(
        f'''"""The page of {model_id}: vqgen's `python -m pipelines.app`, on all interfaces (the Hub's proxy in front)."""

from pipelines.app import main

main(["--model", "{model_id}", "--host", "0.0.0.0", "--port", "{SPACE_PORT}"])
''',
        encoding="utf-8",
    )
    (folder / "requirements.txt").write_text("\n".join(space_requirements()) + "\n", encoding="utf-8")
    for package in SOURCE_PACKAGES:
        shutil.copytree(REPO / package, folder / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
