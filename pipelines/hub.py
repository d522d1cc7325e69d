"""Model cards and uploads of generator bundles to the Hugging Face Hub.

    from pipelines import push_to_hub
    push_to_hub("bundles/fashion_mnist", "me/vqgen-fashion-mnist")     # token: HF_TOKEN or login
    push_to_hub("bundles/fashion_mnist", "me/vqgen-fashion-mnist", space=True)  # + its web page as a Space

The card says what the bundle is, the two lines that use it, the training data and the measured
metrics (the tokenizer's held-out reconstruction MSE and codebook usage, each prior's NLL), all
read from the bundle's config. An upload adds a picture made by the pipeline from the bundle
(a grid of samples, or the spectrograms of generated speech) and, with `space=`, a Space running
`pipelines.app` on the uploaded model (see `pipelines.space`), which the card links to.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData

from stage1_tokenizer.common.hub import nearby
from stage2_prior import VQGenerator

from .pictures import image_grid, spectrogram_picture
from .space import check_space_tools, space_url, write_space

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


def metrics_table(config) -> str:
    """The measured metrics of a bundle's config as a Markdown table (the card's and the app's)."""
    metrics = config.metrics or {}
    rows = _metric_rows("tokenizer", metrics.get("tokenizer", {}))
    for level, prior_metrics in enumerate(metrics.get("priors", [])):
        rows += _metric_rows(f"prior {level}", prior_metrics)
    return "\n".join(["| part | metric | value |", "|---|---|---|", *rows]) if rows else "No metrics were recorded."


def model_card(bundle: VQGenerator, repo_id: str, *, picture: tuple[str, str] | None = None, space_id: str | None = None) -> ModelCard:
    """The README.md of a bundle: what it is, how to use it, its training data and metrics.
    picture: (file name beside the card, caption) to embed; space_id: a Space serving its page."""
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
    table = metrics_table(config)
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
{_picture_section(picture)}{_space_section(space_id, repo_id)}
## Training data

{data}

## Metrics

{table}
"""
    return ModelCard(content)


def _picture_section(picture: tuple[str, str] | None) -> str:
    if picture is None:
        return ""
    name, caption = picture
    return f"\n![{caption}]({name})\n\n{caption}\n"


def _space_section(space_id: str | None, repo_id: str) -> str:
    if space_id is None:
        return ""
    return (
        f"\n## Try it in the browser\n\n[{space_id}]({space_url(space_id)}) is a Space serving this model's page, the one "
        f"`python -m pipelines.app --model {repo_id}` serves locally (`pip install -e \".[app]\"`).\n"
    )


CARD_CLASSES = 8  # rows of the card's sample grid: the first classes
CARD_SAMPLES = 4  # images per class (columns)
CARD_SPEAKERS = 4


def card_seconds(bundle: VQGenerator) -> float:
    """How much speech the card's spectrograms show: the bundle's setting (else 2 s) when its one
    prior samples any length, else the top prior's window (which lower priors' windows must fill)."""
    c, priors = bundle.tokenizer.config, bundle.priors
    wanted = float(bundle.config.generation.get("seconds", 2.0))
    if len(priors) == 1 and priors[0].any_length:
        return wanted
    samples = priors[0].config.code_shape[0] * c.code_strides[0]
    # just under the window, in whole milliseconds (a code lasts several): the pipeline rounds up to
    # whole codes, which then gives the window exactly, never one code more
    window = math.floor((samples - 0.5) / c.sampling_rate * 1000) / 1000
    return window if len(priors) > 1 else min(wanted, window)


def write_card_picture(bundle: VQGenerator, folder: Path) -> tuple[str, str]:
    """Writes the card's picture into `folder`, sampled by the bundle's own pipeline with seed 0:
    a grid of images (a row per class) or the mel spectrograms of speech (one per speaker).
    Returns (file name, caption)."""
    # the pipelines by task name: their modules import this one, so no import of theirs here
    import transformers

    tokenizer = bundle.tokenizer.config
    if tokenizer.modality == "audio":
        speak = transformers.pipeline(TASKS["audio"], model=bundle)
        speakers = list(tokenizer.speakers)[:CARD_SPEAKERS] or [None]
        seconds = card_seconds(bundle)
        clips = [(name or "speech", speak(speaker=name, seconds=seconds, seed=0)["audio"]) for name in speakers]
        spectrogram_picture(clips, tokenizer.sampling_rate).save(folder / "spectrogram.png")
        who = ", ".join(f"`{name}`" for name in speakers if name) or "its one voice"
        return "spectrogram.png", f"Mel spectrograms of {seconds:.2f} s of generated speech for {who} (seed 0)."
    generate = transformers.pipeline(TASKS["image"], model=bundle)
    if bundle.num_classes:
        class_ids = sorted(bundle.config.id2label)[:CARD_CLASSES]
        images = generate(class_ids, num_images=CARD_SAMPLES, seed=0)
        names = ", ".join(f"`{bundle.config.id2label[i]}`" for i in class_ids)
        caption = f"Generated samples (seed 0), one row of {CARD_SAMPLES} per class: {names}."
    else:
        images = generate(num_images=CARD_SAMPLES * CARD_SAMPLES, seed=0)
        caption = f"{len(images)} generated samples (seed 0)."
    image_grid(images, CARD_SAMPLES).save(folder / "samples.png")
    return "samples.png", caption


def push_to_hub(bundle_dir: str | Path, repo_id: str, *, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload vqgen bundle", api: HfApi | None = None, picture: bool = True,
                space: bool | str = False) -> str:  # fmt: skip
    """Uploads a bundle folder (config.json, model.safetensors) with its model card as README.md
    and, with `picture`, the card's picture of generated samples (made here, seed 0).
    space: True (a Space of the same name as the model) or a Space id: also uploads a Gradio Space
    running `pipelines.app` on the uploaded model; the card links to it. Needs the app extra
    (`pip install -e ".[app]"`), whose Gradio version the Space runs.
    The token comes from `token`, else HF_TOKEN or the stored login; it is never printed.
    Returns the model's commit URL."""
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / "config.json").is_file():
        raise FileNotFoundError(f"{bundle_dir} is not a bundle folder (no config.json) on this machine; {nearby(bundle_dir)}.")
    if space is not False and not (space is True or (isinstance(space, str) and space.count("/") == 1)):
        raise ValueError(f"space must be True (a Space named as the model) or a Space id 'user/name', got {space!r}.")
    space_id = repo_id if space is True else space or None
    bundle = VQGenerator.from_pretrained(bundle_dir)  # refuses mismatched parts before any upload
    if space_id:
        check_space_tools()  # before any upload, so a failure leaves nothing half-published
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging, tempfile.TemporaryDirectory() as space_staging:
        staging = Path(staging)
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(bundle_dir / name, staging / name)
        card_picture = write_card_picture(bundle, staging) if picture else None
        model_card(bundle, repo_id, picture=card_picture, space_id=space_id).save(staging / "README.md")
        if space_id:
            write_space(Path(space_staging), repo_id, space_id, bundle.tokenizer.config.modality)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message, repo_type="model")
        if space_id:  # after the model, which the Space loads when it starts
            api.create_repo(space_id, private=private, exist_ok=True, repo_type="space", space_sdk="gradio")
            api.upload_folder(repo_id=space_id, folder_path=space_staging, commit_message=commit_message, repo_type="space")
    return str(getattr(commit, "commit_url", commit))
