"""A web page for a vqgen bundle, made with Gradio (an optional extra: `pip install -e ".[app]"`):

    python -m pipelines.app                               # the local default bundle (the demo's)
    python -m pipelines.app --model outputs/demo/speech/bundle
    python -m pipelines.app --model user/vqgen-fashion-mnist --port 8000

An image bundle gets a class box (names, synonyms or ids), the number of images, seed, temperature,
top-k, a guidance scale when its priors were trained with condition dropout, and a gallery. A speech
bundle gets a speaker list, seconds of new speech, and voice conversion of an uploaded or recorded
utterance into the chosen speaker; each result comes as an audio player and its spectrogram. Both
pages show the model card's metrics and a progress bar while sampling. Bad input gets the
pipeline's own message on the page, never a stack trace. The server listens on 127.0.0.1 only,
unless --host or --share says otherwise. A Space runs the same `main` (see `pipelines.space`).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile

from . import default_bundle, pipeline
from .hub import card_seconds, metrics_table
from .image_generation import VQImageGenerationPipeline
from .labels import IMAGENET_1K
from .pictures import spectrogram_picture
from .speech_generation import VQSpeechGenerationPipeline

MAX_IMAGES = 16
# tiny images are enlarged in the gallery: hard pixel edges instead of a blur
CSS = "#gallery img { image-rendering: pixelated; }"


def require_gradio():
    try:
        import gradio
    except ImportError:
        raise ImportError('the web page needs Gradio, an optional extra of vqgen: pip install -e ".[app]"') from None
    return gradio


def default_model() -> Path:
    """The local image bundle (as `pipelines.pipeline` finds it), else the local speech bundle."""
    try:
        return default_bundle("vq-image-gen")
    except FileNotFoundError as image_error:
        try:
            return default_bundle("vq-speech-gen")
        except FileNotFoundError:
            raise image_error from None


def load_generator(model=None):
    """The pipeline of a bundle folder or Hub repo id (None: the local default): the speech
    pipeline for an audio tokenizer, else the image pipeline. One load either way."""
    generator = pipeline("vq-image-gen", model=model if model is not None else default_model())
    if generator.model.tokenizer.config.modality == "audio":
        return VQSpeechGenerationPipeline(model=generator.model)
    return generator


@contextmanager
def shown_on_the_page():
    """The pipeline's refusals (ValueError, TypeError) become a message box on the page; Gradio
    shows other errors as a bare "Error", without their traceback (show_error stays off)."""
    gr = require_gradio()
    try:
        yield
    except (ValueError, TypeError) as error:
        raise gr.Error(str(error), duration=None, print_exception=False) from None


def describe(generator, name: str) -> str:
    """The page's heading: what the bundle is, from its config."""
    bundle = generator.model
    tokenizer = bundle.tokenizer.config
    levels = tokenizer.num_levels
    priors = " + ".join(type(prior).__name__ for prior in bundle.priors)
    kind = "speech" if tokenizer.modality == "audio" else "images"
    data = f" Trained on {bundle.config.training_data}." if bundle.config.training_data else ""
    return (
        f"# vqgen: {name}\n\nGenerates {kind} with a VQ-VAE tokenizer ({tokenizer.quantizer} quantizer, K={tokenizer.codebook_size} "
        f"codes, {levels} level{'s' if levels > 1 else ''}) and the autoregressive prior{'s' if levels > 1 else ''} {priors} over "
        f"its codes.{data}"
    )


def display_name(name_or_path: str) -> str:
    """A Hub repo id as it is; a folder by its last two parts ("demo/bundle"), not a long absolute path."""
    path = Path(name_or_path or "bundle")
    return "/".join(path.parts[-2:]) if path.exists() else str(name_or_path)


def metrics_section(generator) -> str:
    return "### Metrics (from the model card)\n\n" + metrics_table(generator.model.config)


def build_app(model=None, name: str | None = None):
    """The page (a gr.Blocks) of a bundle: `model` is a folder, a Hub repo id, None for the local
    default, or a loaded vq-image-gen / vq-speech-gen pipeline."""
    gr = require_gradio()
    generator = model if isinstance(model, (VQImageGenerationPipeline, VQSpeechGenerationPipeline)) else load_generator(model)
    name = name or display_name(generator.model.name_or_path)
    # analytics off: a page on one's own machine reports nothing elsewhere
    with gr.Blocks(title=f"vqgen: {name}", analytics_enabled=False) as app:
        gr.Markdown(describe(generator, name))
        if isinstance(generator, VQSpeechGenerationPipeline):
            speech_page(gr, generator)
        else:
            image_page(gr, generator)
        gr.Markdown(metrics_section(generator), elem_id="metrics")
    return app


def image_page(gr, generate) -> None:
    bundle = generate.model
    settings = bundle.config.generation
    codebook_size = bundle.priors[0].config.codebook_size
    labels = bundle.config.id2label if bundle.num_classes else {}
    # guidance mixes conditional and unconditional logits: only priors trained with condition dropout have both
    guided = bundle.num_classes and all(prior.config.condition_dropout > 0 for prior in bundle.priors)
    with gr.Row():
        with gr.Column(scale=1):
            if bundle.config.label_set == IMAGENET_1K:
                known = "any ImageNet-1k class name or WordNet synonym, or an id 0-999"
            elif len(labels) <= 20:
                known = "a name or id: " + ", ".join(f"{i} {label}" for i, label in sorted(labels.items()))
            else:
                known = f"a name or an id 0-{max(labels)}"
            first = next(iter(labels.values()), "")
            class_box = gr.Textbox(label="Class", value=first, info=known, visible=bool(labels), elem_id="class-name")
            count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="num-images")
            seed = gr.Number(value=0, precision=0, label="Seed", info="the same seed gives the same images; empty: a new draw")
            temperature = gr.Slider(0.1, 2.0, value=settings.get("temperature", 1.0), step=0.05, label="Temperature")
            top_k = gr.Slider(0, codebook_size, value=settings.get("top_k") or 0, step=1, label="Top-k", info="0: all codes")
            guidance = gr.Slider(1.0, 10.0, value=settings.get("guidance_scale") or 1.0, step=0.5, label="Guidance scale", visible=bool(guided),
                                 info="1: none; higher follows the class more closely")  # fmt: skip
            button = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Results", columns=4, format="png", object_fit="contain", elem_id="gallery")

    def generate_images(class_name, num_images, seed, temperature, top_k, guidance_scale, progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="sampling")  # the sampling loop's own progress bars then drive the page's
        with shown_on_the_page():
            classes = ((class_name or "").strip() or None) if labels else None
            images = generate(
                classes, num_images=int(num_images), seed=None if seed is None else int(seed), temperature=float(temperature),
                top_k=int(top_k) or None, guidance_scale=float(guidance_scale) if guided else None,
            )  # fmt: skip
            caption = labels[generate.labels(classes)] if classes is not None else None
        images = images if isinstance(images, list) else [images]
        return [(image, caption) for image in images]

    inputs = [class_box, count, seed, temperature, top_k, guidance]
    button.click(generate_images, inputs, gallery, api_name="generate")
    class_box.submit(generate_images, inputs, gallery, api_name=False)


def speech_page(gr, speak) -> None:
    bundle = speak.model
    settings = bundle.config.generation
    rate = speak.sampling_rate
    speakers = list(bundle.tokenizer.config.speakers)

    def player_value(audio: np.ndarray) -> tuple[int, np.ndarray]:
        # 16-bit PCM, which Gradio plays as it is (a float array it would scale to full loudness, hiding a quiet result)
        return rate, np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)

    player = gr.WaveformOptions(show_recording_waveform=False)  # the browser's own <audio> player: the spectrogram shows the rest
    speaker = gr.Dropdown(speakers, value=speakers[0] if speakers else None, label="Speaker", visible=bool(speakers), elem_id="speaker")
    with gr.Tabs():
        with gr.Tab("New speech"):
            with gr.Row():
                with gr.Column(scale=1):
                    seconds = gr.Number(value=card_seconds(bundle), label="Seconds", elem_id="seconds")
                    seed = gr.Number(value=0, precision=0, label="Seed", info="empty: a new draw")
                    temperature = gr.Slider(0.1, 2.0, value=settings.get("temperature", 1.0), step=0.05, label="Temperature")
                    top_k = gr.Slider(0, bundle.priors[0].config.codebook_size, value=settings.get("top_k") or 0, step=1, label="Top-k",
                                      info="0: all codes")  # fmt: skip
                    speak_button = gr.Button("Speak", variant="primary", elem_id="speak")
                with gr.Column(scale=2):
                    new_audio = gr.Audio(label="New speech", type="numpy", interactive=False, waveform_options=player, elem_id="new-audio")
                    new_spectrogram = gr.Image(label="Spectrogram", type="pil", format="png", interactive=False, elem_id="new-spectrogram")
        with gr.Tab("Voice conversion"):
            with gr.Row():
                with gr.Column(scale=1):
                    utterance = gr.Audio(sources=["upload", "microphone"], type="filepath", label="An utterance to re-speak",
                                         elem_id="utterance")  # fmt: skip
                    convert_button = gr.Button("Convert to the speaker", variant="primary", elem_id="convert")
                with gr.Column(scale=2):
                    converted_audio = gr.Audio(label="Converted", type="numpy", interactive=False, waveform_options=player,
                                               elem_id="converted-audio")  # fmt: skip
                    converted_spectrogram = gr.Image(label="Spectrogram", type="pil", format="png", interactive=False,
                                                     elem_id="converted-spectrogram")  # fmt: skip

    def new_speech(speaker, seconds, seed, temperature, top_k, progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="sampling")
        with shown_on_the_page():
            out = speak(speaker=speaker, seconds=seconds, seed=None if seed is None else int(seed), temperature=float(temperature),
                        top_k=int(top_k) or None)  # fmt: skip
        title = f"{speaker or 'speech'}, seed {seed}"
        return player_value(out["audio"]), spectrogram_picture([(title, out["audio"])], rate)

    def convert(speaker, path, progress=gr.Progress(track_tqdm=True)):
        if not path:
            raise gr.Error("upload or record an utterance first.", duration=None, print_exception=False)
        try:
            audio, source_rate = soundfile.read(path, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            message = f"could not read {Path(path).name} ({error}): upload WAV, FLAC, OGG or MP3."
            raise gr.Error(message, duration=None, print_exception=False) from None
        progress(0, desc="converting")
        with shown_on_the_page():  # a stereo upload is averaged to mono here: the page has no other way to ask for it
            out = speak(speaker=speaker, audio=audio.mean(axis=1), sampling_rate=source_rate)
        return player_value(out["audio"]), spectrogram_picture([(f"{Path(path).name} as {speaker or 'the decoder'}", out["audio"])], rate)

    speak_button.click(new_speech, [speaker, seconds, seed, temperature, top_k], [new_audio, new_spectrogram], api_name="speak")
    convert_button.click(convert, [speaker, utterance], [converted_audio, converted_spectrogram], api_name="convert")


def launch(app, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False, block: bool = True):
    """Serves the page; returns (local URL, share URL or None). `block=False` returns at once."""
    _, local_url, share_url = app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, css=CSS)
    return local_url, share_url


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.app", description="A web page that generates with a vqgen bundle.")
    parser.add_argument("--model", help="a bundle folder or a Hub repo id (default: the local bundle, as pipelines.pipeline finds it)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="the port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="also a temporary public link through Gradio's share servers")
    args = parser.parse_args(argv)
    try:
        require_gradio()
        app = build_app(args.model)
    except (ImportError, FileNotFoundError, ValueError, TypeError, OSError) as error:
        sys.exit(f"error: {error}")
    launch(app, host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    main()
