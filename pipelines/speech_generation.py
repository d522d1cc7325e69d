"""Speaker-conditioned speech: a speaker name -> prior(s) -> the tokenizer's decoder -> a waveform;
and voice conversion: an utterance -> its codes -> decoded in another speaker's voice.

    >>> import pipelines, transformers
    >>> speak = transformers.pipeline("vq-speech-gen", model="outputs/demo/speech/bundle")
    >>> out = speak(speaker="gb-female", seconds=2.0, seed=0)   # {"audio": float32 (T,), "sampling_rate": 16000}
    >>> converted = speak(speaker="us-male-low", audio=out["audio"], sampling_rate=out["sampling_rate"])

The model is a `stage2_prior.VQGenerator` bundle whose tokenizer is an audio VQ-VAE with speakers.
Generation samples codes from the speaker-conditioned prior (top level first, as for images) and
decodes them with the same speaker. Conversion follows the VQ-VAE paper (section 4.3): the encoder
never sees the speaker, so the codes of an utterance keep its content, and the decoder, given
another speaker's id, says it in that voice.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from stage1_tokenizer.data import read_audio
from stage1_tokenizer.data.media import SettingMismatch
from stage2_prior import VQGenerator, sample_hierarchy

from .base import BundlePipeline, check_number, make_generator

MAX_SECONDS = 600.0  # a request longer than ten minutes is a mistake, not a sample to wait hours for
from .labels import LabelResolver


class VQSpeechGenerationPipeline(BundlePipeline):
    def __init__(self, model: VQGenerator, **kwargs):
        if not isinstance(model, VQGenerator) or model.tokenizer.config.modality != "audio":
            raise TypeError(
                "vq-speech-gen needs a vqgen bundle (stage2_prior.VQGenerator) with an audio tokenizer; got "
                f"{type(model).__name__}{' with an image tokenizer: use vq-image-gen' if isinstance(model, VQGenerator) else ''}."
            )
        super().__init__(model=model, **kwargs)
        self.model.eval()
        speakers = model.tokenizer.config.speakers
        self.speakers = LabelResolver(dict(enumerate(speakers)), kind="speaker") if speakers else None

    @property
    def sampling_rate(self) -> int:
        return self.model.tokenizer.config.sampling_rate

    def speaker_id(self, speaker) -> int | None:
        """A speaker name or id -> its id (None for a tokenizer without speakers)."""
        if self.speakers is None:
            if speaker is not None:
                raise ValueError(f"this bundle's decoder has no speakers; got speaker={speaker!r}: call it without one.")
            return None
        if speaker is None:
            raise ValueError(f"pass speaker=, one of {', '.join(repr(s) for s in self.speakers.id2label.values())}.")
        return self.speakers(speaker)

    @torch.no_grad()
    def __call__(
        self,
        inputs=None,
        *,
        speaker=None,
        seconds: float | None = None,
        audio=None,
        sampling_rate: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> dict:
        """Speech in `speaker`'s voice (a name or an id; `inputs` may hold it too):
        - `seconds` of new speech sampled from the prior (default: the bundle's setting, else 2), or
        - with `audio` (a path, a float array (T,) with `sampling_rate`, or a `datasets` dict
          {"array", "sampling_rate"}), that utterance re-spoken in the voice: voice conversion.
        Returns {"audio": float32 array (T,) in [-1, 1], "sampling_rate": int}. `seed` (or a
        `generator`) makes it reproducible; use_cache=False runs the slow reference samplers."""
        speaker = self.speaker_id(speaker if speaker is not None else inputs)
        generator = make_generator(seed, generator, self.device)
        check_number("temperature", temperature)
        ids = None if speaker is None else torch.tensor([speaker], device=self.device)
        tokenizer = self.model.tokenizer
        if audio is not None:
            if seconds is not None:
                raise ValueError("pass either audio= (to convert it) or seconds= (to generate), not both.")
            waveform = self.read_waveform(audio, sampling_rate)
            length = waveform.shape[-1]
            stride = tokenizer.config.total_stride
            padded = torch.nn.functional.pad(waveform, (0, -length % stride))  # a whole number of codes
            codes = tokenizer.encode(padded[None].to(self.device))
            speech = tokenizer.decode(codes, ids, generator=generator, use_cache=use_cache)[0, 0, :length]
        else:
            defaults = self.model.config.generation
            seconds = seconds if seconds is not None else defaults.get("seconds", 2.0)
            check_number("seconds", seconds)
            if seconds > MAX_SECONDS:
                raise ValueError(f"seconds must be at most {MAX_SECONDS:g} (ten minutes) per call, got {seconds!r}; generate in parts.")
            condition = ids if self.model.num_classes else None  # an unconditional prior speaks for all voices
            codes = sample_hierarchy(
                self.model.priors, 1, condition, shapes=self.code_shapes(seconds), generator=generator, use_cache=use_cache,
                temperature=temperature if temperature is not None else defaults.get("temperature", 1.0),
                top_k=top_k if top_k is not None else defaults.get("top_k"),
            )  # fmt: skip
            speech = tokenizer.decode(codes, ids, generator=generator, use_cache=use_cache)[0, 0]
        return {"audio": speech.float().cpu().numpy().astype(np.float32), "sampling_rate": self.sampling_rate}

    def code_shapes(self, seconds: float) -> list[tuple[int]]:
        """Code sequence lengths per level (top first) for `seconds` of speech, refused when the
        priors cannot sample that many (a transformer's positions, a lower level's window)."""
        c = self.model.tokenizer.config
        top = max(1, math.ceil(seconds * c.sampling_rate / c.total_stride))
        shapes = [(top * 2**level,) for level in range(c.num_levels)]
        for shape, prior in zip(shapes, self.model.priors):
            window = prior.config.code_shape[0]
            if shape[0] != window and not (prior.config.context_shape is None and (shape[0] < window or prior.any_length)):
                longest = window * c.code_strides[prior.config.level] / c.sampling_rate
                raise ValueError(
                    f"this bundle's {type(prior).__name__} samples at most {window} codes ({longest:.2f} s) at level "
                    f"{prior.config.level}; ask for seconds <= {longest:.2f}, or train a WaveNet prior, which samples any length."
                )
        return shapes

    def read_waveform(self, audio, sampling_rate: int | None) -> torch.Tensor:
        """A path, an array with its rate, or {"array", "sampling_rate"} -> a mono float tensor
        (1, T) at the model's rate."""
        if isinstance(audio, (str, Path)):
            try:
                return read_audio(audio, self.sampling_rate)
            except SettingMismatch as error:  # several channels: the pipeline's fix, not read_audio's option
                raise ValueError(f"{audio} is not mono ({error}); convert it to mono first, e.g. pass audio=array.mean(axis=1).") from None
        if isinstance(audio, dict):
            if "array" not in audio or "sampling_rate" not in audio:
                raise ValueError(f"an audio dict needs 'array' and 'sampling_rate' (a `datasets` Audio value), got keys {sorted(audio)}.")
            audio, sampling_rate = audio["array"], audio["sampling_rate"]
        if sampling_rate is None:
            raise ValueError(f"pass sampling_rate= with a raw waveform (this model runs at {self.sampling_rate} Hz).")
        check_number("sampling_rate", sampling_rate)
        array = np.asarray(audio)
        if np.issubdtype(array.dtype, np.integer):  # PCM (scipy.io.wavfile gives int16): scale by the type's range
            array = array.astype(np.float32) / float(-np.iinfo(array.dtype).min)
        elif not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"audio must be numbers (float in [-1, 1] or integer PCM), got an array of {array.dtype}.")
        waveform = torch.as_tensor(array, dtype=torch.float32)
        if waveform.ndim == 2 and 1 in waveform.shape:
            waveform = waveform.reshape(-1)
        if waveform.ndim != 1:
            raise ValueError(f"expected a mono waveform (T,), got shape {tuple(waveform.shape)}; average the channels first.")
        if waveform.numel() == 0 or not torch.isfinite(waveform).all() or waveform.abs().max() < 1e-4:
            raise ValueError("the waveform is empty, silent or not finite: pass an utterance with sound in it.")
        if waveform.abs().max() > 1.01:
            raise ValueError(
                f"float audio must lie in [-1, 1], got a peak of {waveform.abs().max().item():.4g}: scale it (integer PCM is scaled for you)."
            )
        if sampling_rate != self.sampling_rate:
            waveform = AF.resample(waveform, int(sampling_rate), self.sampling_rate)
        return waveform.clamp(-1, 1)[None]
