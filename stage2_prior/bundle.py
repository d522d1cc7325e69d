"""A generator bundle: one model folder holding a tokenizer, its priors (top level first) and the
generation settings, so that `AutoModel.from_pretrained(DIR)` (and the pipelines) load the whole
chain from one `config.json` + `model.safetensors`. `write_bundle` makes one from trained model
folders (the command line: `python -m stage2_prior.generator`).

Parts that do not belong together are refused when the bundle is built or loaded: a prior whose
codebook size, code grid or context grid differs from the tokenizer's, or that was trained on
codes of another tokenizer (its `tokenizer_fingerprint`).
"""

import json
from dataclasses import field
from pathlib import Path

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from stage1_tokenizer.code_dataset import tokenizer_fingerprint
from stage1_tokenizer.common.files import atomic_directory
from stage1_tokenizer.common.loading import StrictLoading
from stage1_tokenizer.common.training import EVAL_RESULTS


def _config_from_dict(values: dict) -> PreTrainedConfig:
    values = {k: v for k, v in values.items() if k not in ("transformers_version", "_name_or_path")}
    return AutoConfig.for_model(values.pop("model_type"), **values)


@strict
class VQGeneratorConfig(PreTrainedConfig):
    r"""A bundle's configuration: its parts' configs and the pipeline's settings."""

    model_type = "vqgen-generator"

    tokenizer_config: dict | None = field(default_factory=dict, metadata={"help": "The tokenizer's config (`to_dict()`, with its model_type)."})
    prior_configs: list[dict] | None = field(default_factory=list, metadata={"help": "The priors' configs, top level first."})
    label_set: str | None = field(
        default=None,
        metadata={"help": "'imagenet-1k' lets the pipeline resolve all 1000 ImageNet names and synonyms; None uses id2label alone."},
    )
    generation: dict | None = field(default_factory=dict, metadata={"help": "Default sampling options of the pipeline (temperature, top_k, guidance_scale)."})
    metrics: dict | None = field(default_factory=dict, metadata={"help": "Measured results for the model card: {tokenizer: {...}, priors: [...]}."})
    training_data: str | None = field(default=None, metadata={"help": "What it was trained on, for the model card."})

    def __post_init__(self, **kwargs):
        self.tokenizer_config, self.prior_configs = dict(self.tokenizer_config or {}), list(self.prior_configs or [])
        self.generation, self.metrics = dict(self.generation or {}), dict(self.metrics or {})
        super().__post_init__(**kwargs)


class VQGenerator(StrictLoading, PreTrainedModel):
    config_class = VQGeneratorConfig
    base_model_prefix = "generator"

    def __init__(self, config: VQGeneratorConfig):
        super().__init__(config)
        if not config.tokenizer_config or not config.prior_configs:
            raise ValueError("a VQGenerator needs a tokenizer_config and at least one prior config; build it with VQGenerator.from_parts.")
        self.tokenizer = AutoModel.from_config(_config_from_dict(config.tokenizer_config))
        self.priors = nn.ModuleList(AutoModel.from_config(_config_from_dict(c)) for c in config.prior_configs)
        self.check_parts()
        self.post_init()

    def _init_weights(self, module):
        pass  # the parts initialise themselves; a bundle's weights always come from trained parts

    @property
    def num_classes(self) -> int:
        return self.priors[0].config.num_classes

    @classmethod
    def from_parts(cls, tokenizer, priors, *, label_set=None, generation=None, metrics=None, training_data=None) -> "VQGenerator":
        """A bundle of trained parts (weights copied), refusing parts that do not belong together."""
        priors = list(priors)
        id2label = dict(priors[0].config.id2label) if priors and priors[0].config.num_classes else None
        config = VQGeneratorConfig(
            tokenizer_config=tokenizer.config.to_dict(),
            prior_configs=[p.config.to_dict() for p in priors],
            label_set=label_set,
            generation=generation,
            metrics=metrics,
            training_data=training_data,
            **({"id2label": id2label} if id2label else {}),
        )
        bundle = cls(config)
        bundle.tokenizer.load_state_dict(tokenizer.state_dict())
        for part, prior in zip(bundle.priors, priors):
            part.load_state_dict(prior.state_dict())
        bundle.check_parts(weights=True)
        return bundle.eval()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        bundle = super().from_pretrained(*args, **kwargs)
        bundle.check_parts(weights=True)  # the fingerprint needs the loaded weights
        return bundle.eval()

    def check_parts(self, weights: bool = False) -> None:
        """Each prior must model level i of this tokenizer: same codebook size, code grid (speech:
        sequences), context grid; with `weights`, also codes of this very tokenizer (its fingerprint)."""
        tokenizer = self.tokenizer.config
        K, levels, audio = tokenizer.codebook_size, tokenizer.num_levels, tokenizer.modality == "audio"
        if len(self.priors) != levels:
            raise ValueError(f"the tokenizer has {levels} level(s) but the bundle has {len(self.priors)} prior(s): one per level, top first.")
        fingerprint = tokenizer_fingerprint(self.tokenizer) if weights else None
        for level, prior in enumerate(self.priors):
            c = prior.config
            problems = []
            if c.codebook_size != K:
                problems.append(f"codebook size {c.codebook_size} (the tokenizer's: {K})")
            if audio:  # speech codes: sequences, modelled in windows; a window's context is half as long
                if len(c.code_shape) != 1:
                    problems.append(f"code grid {list(c.code_shape)} (speech codes are sequences: (T,))")
                if c.num_classes and tokenizer.speakers and c.num_classes != len(tokenizer.speakers):
                    problems.append(f"{c.num_classes} speakers (the tokenizer's: {len(tokenizer.speakers)})")
                expected_context = [c.code_shape[0] // 2] if level else None
            else:
                grid = list(tokenizer.code_grids[level])
                if list(c.code_shape) != grid:
                    problems.append(f"code grid {list(c.code_shape)} (the tokenizer's level {level}: {grid})")
                expected_context = list(tokenizer.code_grids[level - 1]) if level else None
            if (list(c.context_shape) if c.context_shape else None) != expected_context:
                problems.append(f"context grid {c.context_shape} (expected {expected_context})")
            if c.num_classes != self.num_classes:
                problems.append(f"{c.num_classes} classes (the top prior's: {self.num_classes})")
            if fingerprint and c.tokenizer_fingerprint and c.tokenizer_fingerprint != fingerprint:
                problems.append(
                    f"codes of tokenizer {c.tokenizer_fingerprint[:12]}, not of this tokenizer ({fingerprint[:12]}): "
                    "train the prior on codes encoded by this tokenizer"
                )
            if problems:
                raise ValueError(f"prior {level} ({type(prior).__name__}) does not fit the tokenizer: " + "; ".join(problems) + ".")


def read_eval_results(model_dir: str | Path) -> dict:
    path = Path(model_dir) / EVAL_RESULTS
    return json.loads(path.read_text()) if path.is_file() else {}


def write_bundle(tokenizer_dir, prior_dirs, output_dir, *, label_set=None, generation=None, training_data=None, overwrite=False) -> Path:
    """Builds a bundle from trained model folders (their eval_results.json become its metrics)
    and writes it atomically to `output_dir` (replacing only an earlier bundle, unless `overwrite`)."""
    tokenizer = AutoModel.from_pretrained(tokenizer_dir)
    priors = [AutoModel.from_pretrained(d) for d in prior_dirs]
    metrics = {"tokenizer": read_eval_results(tokenizer_dir), "priors": [read_eval_results(d) for d in prior_dirs]}
    bundle = VQGenerator.from_parts(
        tokenizer, priors, label_set=label_set, generation=generation, metrics=metrics, training_data=training_data
    )
    with atomic_directory(output_dir, overwrite) as tmp:
        bundle.save_pretrained(tmp)
    return Path(output_dir)
