"""Hugging Face pipelines chaining a tokenizer and its priors. Importing this package registers
the tasks with `transformers.pipelines.PIPELINE_REGISTRY`:

    import pipelines, transformers
    generate = transformers.pipeline("vq-image-gen", model="outputs/demo/bundle")
    generate("sneaker")

`pipelines.pipeline(task, model=None, ...)` does the same in one import; without `model` it uses
the bundle named by $VQGEN_BUNDLE, else the one the demo wrote (outputs/demo/bundle), and never
the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import transformers
from transformers.pipelines import PIPELINE_REGISTRY

from stage2_prior import VQGenerator

from .hub import model_card, push_to_hub
from .image_generation import VQImageGenerationPipeline
from .labels import LabelResolver, imagenet_1k_id2label

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "outputs" / "demo" / "bundle"
BUNDLE_ENV = "VQGEN_BUNDLE"

def default_bundle() -> Path:
    """$VQGEN_BUNDLE, else the demo's bundle; an error saying how to get one if neither exists."""
    named = os.environ.get(BUNDLE_ENV)
    if named:
        if not (Path(named) / "config.json").is_file():
            raise FileNotFoundError(f"${BUNDLE_ENV}={named} is not a bundle folder (it has no config.json).")
        return Path(named)
    if (DEMO_BUNDLE / "config.json").is_file():
        return DEMO_BUNDLE
    raise FileNotFoundError(
        "no model given and no local bundle found: pass model=DIR (a bundle folder or a Hub repo id), set "
        f"${BUNDLE_ENV}=DIR, or run `bash scripts/demo.sh`, which writes one to {DEMO_BUNDLE}."
    )


class _LocalDefault:
    """The task's default model, found on disk when `transformers.pipeline("vq-image-gen")` is
    called without a model (transformers unpacks it as (model, revision)): never the Hub."""

    def __iter__(self):
        return iter((str(default_bundle()), None))


PIPELINE_REGISTRY.register_pipeline(
    "vq-image-gen",
    pipeline_class=VQImageGenerationPipeline,
    pt_model=VQGenerator,
    default={"model": _LocalDefault()},
    type="image",
)


def pipeline(task: str = "vq-image-gen", model=None, **kwargs):
    """`transformers.pipeline` for vqgen's tasks. `model`: a bundle folder, a Hub repo id, or
    None for the local default. A path that does not exist fails at once instead of being
    looked up on the Hub as a repo id."""
    if model is None:
        model = default_bundle()
    if isinstance(model, (str, Path)) and not Path(model).exists():
        text = str(model)
        if isinstance(model, Path) or text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise FileNotFoundError(f"model={text!r} is neither a bundle folder on this machine nor a Hub repo id ('user/name').")
    return transformers.pipeline(task, model=str(model) if isinstance(model, Path) else model, **kwargs)


__all__ = [
    "LabelResolver",
    "VQImageGenerationPipeline",
    "default_bundle",
    "imagenet_1k_id2label",
    "model_card",
    "pipeline",
    "push_to_hub",
]
