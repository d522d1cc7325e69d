"""Model cards and uploads of generator bundles to the Hugging Face Hub.

    from pipelines import push_to_hub
    push_to_hub("bundles/fashion_mnist", "me/vqgen-fashion-mnist")     # token: HF_TOKEN or login

The card says what the bundle is, the two lines that use it, the training data and the measured
metrics (the tokenizer's held-out reconstruction MSE and codebook usage, each prior's NLL), all
read from the bundle's config; nothing is uploaded that the bundle folder does not hold.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData

from stage2_prior import VQGenerator

TASKS = {"image": "vq-image-gen", "audio": "vq-speech-gen"}
METRIC_NAMES = {
    "mse_from_codes": "held-out reconstruction MSE (decoded from the codes)",
    "log_mel_distance": "held-out reconstruction log-mel distance (decoded from the codes)",
    "nll_per_sample": "held-out WaveNet decoder NLL (nats per sample)",
    "codebook_used": "share of the codebook used on the held-out split",
    "perplexity": "codebook perplexity on the held-out split",
    "nll_nats_per_code": "held-out NLL (nats per code)",
    "code_bits_per_input_dim": "codes' bits per input dimension",
}


def _metric_rows(part: str, metrics: dict) -> list[str]:
    rows = []
    for key, value in metrics.items():
        if key == "step" or not isinstance(value, (int, float)):
            continue
        name = next((label for k, label in METRIC_NAMES.items() if key.startswith(k)), key)
        suffix = key.split("_")[-1] if key.endswith(("_top", "_bottom")) else ""
        rows.append(f"| {part} | {name}{f' ({suffix} level)' if suffix else ''} | {value:.4g} |")
    return rows


def model_card(bundle: VQGenerator, repo_id: str) -> ModelCard:
    """The README.md of a bundle: what it is, how to use it, its training data and metrics."""
    config = bundle.config
    tokenizer = bundle.tokenizer.config
    modality = getattr(tokenizer, "modality", "image")
    task = TASKS.get(modality, "vq-image-gen")
    audio = modality == "audio"
    labels = config.id2label if bundle.num_classes else {}
    example = next(iter(labels.values()), None) if labels else None
    if audio:
        first = next(iter(tokenizer.speakers), None)
        usage = f'speech = generate(speaker="{first}", seconds=2)  # {{"audio": float32 array, "sampling_rate": {tokenizer.sampling_rate}}}'
        usage += f'\nconverted = generate(speaker="{first}", audio="utterance.wav")  # voice conversion' if first else ""
    else:
        usage = f'image = generate("{example}")' if example else "images = generate(num_images=4)"
    priors = ", ".join(
        f"{type(p).__name__} (level {i}, {sum(t.numel() for t in p.parameters()):,} parameters)" for i, p in enumerate(bundle.priors)
    )
    if audio:
        rates = " + ".join(f"{rate:g}" for rate in tokenizer.code_rates)
        grids = f"{rates} codes per second of {tokenizer.sampling_rate} Hz audio, {tokenizer.audio_decoder} decoder"
    else:
        grids = "code grid " + " + ".join("x".join(map(str, g)) for g in tokenizer.code_grids)
    data = config.training_data or "not recorded"
    metrics = config.metrics or {}
    rows = _metric_rows("tokenizer", metrics.get("tokenizer", {}))
    for level, prior_metrics in enumerate(metrics.get("priors", [])):
        rows += _metric_rows(f"prior {level}", prior_metrics)
    table = "\n".join(["| part | metric | value |", "|---|---|---|", *rows]) if rows else "No metrics were recorded."
    if config.label_set == "imagenet-1k":
        classes = "the 1000 ImageNet-1k classes (names and WordNet synonyms, or ids 0-999)"
    elif labels:
        classes = ", ".join(f"`{name}`" for name in labels.values())
    else:
        classes = "none (unconditional)"
    if audio:
        classes = ", ".join(f"`{name}`" for name in tokenizer.speakers) or "none (one voice)"
    card_data = ModelCardData(
        library_name="vqgen",
        license="apache-2.0",
        tags=["vqgen", "vq-vae", task, modality, f"quantizer-{tokenizer.quantizer}"],
        datasets=[config.training_data] if config.training_data and "/" in config.training_data else None,
    )
    content = f"""---
{card_data.to_yaml()}
---

# {repo_id.split("/")[-1]}

A two-stage {modality} generator made with vqgen: a VQ-VAE
tokenizer ({tokenizer.quantizer} quantizer, K={tokenizer.codebook_size} codes per level, {grids})
and autoregressive prior(s) over its codes: {priors}.

## Usage

```python
import pipelines, transformers  # pip install vqgen; importing pipelines registers the task
generate = transformers.pipeline("{task}", model="{repo_id}")
{usage}
```

{"Speakers" if audio else "Classes"}: {classes}.

## Training data

{data}

## Metrics

{table}
"""
    return ModelCard(content)


def push_to_hub(bundle_dir: str | Path, repo_id: str, *, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload vqgen bundle", api: HfApi | None = None) -> str:  # fmt: skip
    """Uploads a bundle folder (config.json, model.safetensors) with its model card as README.md.
    The token comes from `token`, else HF_TOKEN or the stored login; it is never printed.
    Returns the commit URL."""
    bundle_dir = Path(bundle_dir)
    bundle = VQGenerator.from_pretrained(bundle_dir)  # refuses mismatched parts before any upload
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(bundle_dir / name, staging / name)
        model_card(bundle, repo_id).save(staging / "README.md")
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message, repo_type="model")
    return str(getattr(commit, "commit_url", commit))
