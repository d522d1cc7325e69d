"""What the vqgen pipelines share: a `VQGenerator` bundle as the model, no tokenizer or processor
to load (inputs are resolved in each pipeline's `__call__`), and saving or uploading the bundle
with its model card."""

from __future__ import annotations

import math

import torch
from transformers import Pipeline


def check_count(name: str, value, low: int = 1) -> int:
    """`value` as an int >= low; ValueError naming it otherwise (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    return value


def make_generator(seed, generator, device) -> torch.Generator | None:
    """The generator of a call: `generator`, else one seeded by `seed` (an int), else None."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}.")
    return torch.Generator(device=device).manual_seed(seed)


def check_number(name: str, value, *, positive: bool = True, allow_none: bool = True):
    """A finite real number (> 0 when `positive`), or None."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}.")
    return value


class BundlePipeline(Pipeline):
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    # transformers' preprocess -> _forward -> postprocess chain is bypassed: each pipeline's
    # __call__ is one readable function (sampling loops do not fit a per-example chain)
    def _sanitize_parameters(self, **kwargs):
        return {}, kwargs, {}

    def preprocess(self, inputs, **kwargs):
        return inputs

    def _forward(self, inputs, **kwargs):
        return inputs

    def postprocess(self, outputs, **kwargs):
        return outputs

    def save_pretrained(self, save_directory, overwrite: bool = False, **kwargs):
        """Writes the bundle (config.json + model.safetensors) and its model card, atomically; an
        existing folder is replaced only if it is an earlier bundle (or with `overwrite=True`)."""
        from stage1_tokenizer.common.files import atomic_directory

        from .hub import model_card

        with atomic_directory(save_directory, overwrite) as tmp:
            self.model.save_pretrained(tmp)
            model_card(self.model, str(save_directory)).save(tmp / "README.md")

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Uploads the bundle with its model card (see `pipelines.hub.push_to_hub`)."""
        import tempfile

        from .hub import push_to_hub

        with tempfile.TemporaryDirectory() as folder:
            self.model.save_pretrained(folder)
            return push_to_hub(folder, repo_id, **kwargs)
