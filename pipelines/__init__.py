"""Hugging Face pipelines chaining a tokenizer and its priors. Importing this package registers
the tasks with `transformers.pipelines.PIPELINE_REGISTRY`:

    import pipelines, transformers
    generate = transformers.pipeline("vq-image-gen", model="outputs/demo/bundle")
    generate("sneaker")
    speak = transformers.pipeline("vq-speech-gen", model="outputs/demo/speech/bundle")
    speak(speaker="gb-female", seconds=2)             # {"audio": float32 array, "sampling_rate": int}

`pipelines.pipeline(task, model=None, ...)` does the same in one import; without `model` it uses
the bundle named by $VQGEN_BUNDLE (images) or $VQGEN_SPEECH_BUNDLE (speech), else the one the
demo wrote, and never the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import transformers
from transformers.pipelines import PIPELINE_REGISTRY

from stage1_tokenizer.common.hub import check_local_or_hub, nearby
from stage2_prior import VQGenerator

from .hub import model_card, push_to_hub
from .image_generation import VQImageGenerationPipeline
from .labels import LabelResolver, imagenet_1k_id2label
from .speech_generation import VQSpeechGenerationPipeline

OUTPUTS = Path(__file__).resolve().parent.parent / "outputs" / "demo"
# task: (environment variable naming a bundle, the demo's bundle, the command that writes it)
DEFAULT_BUNDLES = {
    "vq-image-gen": ("VQGEN_BUNDLE", OUTPUTS / "bundle", "bash scripts/demo.sh"),
    "vq-speech-gen": ("VQGEN_SPEECH_BUNDLE", OUTPUTS / "speech" / "bundle", "bash scripts/demo.sh"),
}


def default_bundle(task: str = "vq-image-gen") -> Path:
    """The bundle named by the task's environment variable, else the demo's; an error saying how
    to get one if neither exists."""
    variable, demo, command = DEFAULT_BUNDLES[task]
    named = os.environ.get(variable)
    if named:
        if not (Path(named) / "config.json").is_file():
            raise FileNotFoundError(f"${variable}={named} is not a bundle folder (it has no config.json).")
        return Path(named)
    if (demo / "config.json").is_file():
        return demo
    raise FileNotFoundError(
        f"no model given and no local {task} bundle found: pass model=DIR (a bundle folder or a Hub repo id), set "
        f"${variable}=DIR, or run `{command}`, which writes one to {demo}."
    )


class _LocalDefault:
    """A task's default model, found on disk when `transformers.pipeline(task)` is called without
    a model (transformers unpacks it as (model, revision)): never the Hub."""

    def __init__(self, task: str):
        self.task = task

    def __iter__(self):
        return iter((str(default_bundle(self.task)), None))


for task, pipeline_class, kind in (
    ("vq-image-gen", VQImageGenerationPipeline, "image"),
    ("vq-speech-gen", VQSpeechGenerationPipeline, "audio"),
):
    PIPELINE_REGISTRY.register_pipeline(
        task, pipeline_class=pipeline_class, pt_model=VQGenerator, default={"model": _LocalDefault(task)}, type=kind
    )


def pipeline(task: str = "vq-image-gen", model=None, **kwargs):
    """`transformers.pipeline` for vqgen's tasks. `model`: a bundle folder, a Hub repo id, or
    None for the local default. A path that does not exist fails at once instead of being
    looked up on the Hub as a repo id."""
    if model is None:
        model = default_bundle(task)
    if isinstance(model, (str, Path)) and not Path(model).exists():
        text = str(model)
        if isinstance(model, Path) or text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise FileNotFoundError(f"model={text!r} is neither a bundle folder on this machine nor a Hub repo id ('user/name'); {nearby(text)}.")
        check_local_or_hub(text, "model")
    return transformers.pipeline(task, model=str(model) if isinstance(model, Path) else model, **kwargs)


__all__ = [
    "LabelResolver",
    "VQImageGenerationPipeline",
    "VQSpeechGenerationPipeline",
    "default_bundle",
    "imagenet_1k_id2label",
    "model_card",
    "pipeline",
    "push_to_hub",
]
