"""Voice conversion judged by the two independent judges: does the speech keep its words
(`speech_recognizer`), and does it take on the target's voice (`speaker_judge`)?

`judge_conversions(convert, corpus, speaker_judge, recognizer)` decodes every utterance of a
parallel corpus (`SyntheticSpeech`) in every voice: in its own voice that is its reconstruction,
the judge's ceiling; in each other voice a conversion. `convert(waveform (1, T), voices) ->
(len(voices), T)` is whatever turns speech into codes and back: a tokenizer
(`tokenizer_converter`) or the `vq-speech-gen` pipeline. `real_recording_wer` converts real
recordings, where only the content can be judged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .speaker_judge import SpeakerClassifier
from .speech_recognizer import SpeechRecognizer, word_error_rate

Converter = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]


def tokenizer_converter(tokenizer) -> Converter:
    """`convert` for a speech tokenizer with speakers: the utterance encoded once, zero-padded to a
    whole number of codes (as the pipeline does), decoded in each voice, trimmed back."""

    @torch.no_grad()
    def convert(waveform: torch.Tensor, voices: Sequence[int]) -> torch.Tensor:
        length = waveform.shape[-1]
        padded = F.pad(waveform.reshape(1, 1, length), (0, -length % tokenizer.config.total_stride))
        codes = [grid.expand(len(voices), *grid.shape[1:]) for grid in tokenizer.encode(padded.to(tokenizer.device))]
        return tokenizer.decode(codes, torch.tensor(list(voices), device=tokenizer.device))[:, 0, :length].cpu()

    return convert


def corpus_speaker_judge(corpus) -> SpeakerClassifier:
    """The speaker judge fitted on every utterance of `corpus` (a `SyntheticSpeech` split)."""
    items = [corpus[index] for index in range(len(corpus))]
    judge = SpeakerClassifier(corpus.sampling_rate)
    return judge.fit([item["input_values"] for item in items], [int(item["speaker"]) for item in items])


def judge_conversions(
    convert: Converter,
    corpus,
    speaker_judge: SpeakerClassifier,
    recognizer: SpeechRecognizer | None = None,
    *,
    sentences: int | None = None,
    wer_sentences: int | None = None,
    progress: bool = True,
) -> dict:
    """Every utterance of `corpus` (or of its first `sentences` sentences) in every voice, judged.

    Identity (all utterances): "judge_on_originals", "reconstructions_judged_as_source" (the
    ceiling), "conversions_judged_as_target", "conversions_judged_as_source", and
    "conversion_confusion": [decoded as][judged as], each row's conversions summing to 1 (own-voice
    decodings left out). Content, with a `recognizer`, on the utterances of the first
    `wer_sentences` sentences (default all) in every voice: "wer_originals",
    "wer_reconstructions" and "wer_conversions" (into voice (source + n // 2) mod n, n voices).
    """
    for name, value in (("sentences", sentences), ("wer_sentences", wer_sentences)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive number of sentences (or None for all), got {value!r}.")
    voices = list(range(len(corpus.speakers)))
    count = len(voices)

    def first(sentence_count):  # the corpus is sentence-major: item i is sentence i // count
        return len(corpus) if sentence_count is None else min(sentence_count * count, len(corpus))

    items, wer_items = range(first(sentences)), range(min(first(wer_sentences), first(sentences)))
    judged = torch.zeros(count, count, count, dtype=torch.long)  # [source, decoded as, judged as]
    originals_right = 0
    references, heard = [], {"originals": [], "reconstructions": [], "conversions": []}
    for index in tqdm(items, desc="convert and judge", leave=False, disable=not progress):
        item = corpus[index]
        source, waveform = int(item["speaker"]), item["input_values"]
        outputs = convert(waveform, voices)
        names = speaker_judge.predict([waveform, *outputs]).tolist()
        originals_right += names[0] == source
        for voice, name in enumerate(names[1:]):
            judged[source, voice, name] += 1
        if recognizer is not None and index in wer_items:
            references.append(corpus.texts[index])
            heard["originals"].append(recognizer.transcribe(waveform, corpus.sampling_rate))
            heard["reconstructions"].append(recognizer.transcribe(outputs[source], corpus.sampling_rate))
            heard["conversions"].append(recognizer.transcribe(outputs[(source + count // 2) % count], corpus.sampling_rate))

    own = torch.eye(count, dtype=torch.bool)
    reconstructions = judged[own]  # [source, judged as]
    conversions = judged.masked_fill(own.unsqueeze(-1), 0)
    total = conversions.sum().item()
    by_target = conversions.sum(0).double()  # [decoded as, judged as]
    report = {
        "utterances": len(items),
        "chance": 1 / count,
        "judge_on_originals": originals_right / len(items),
        "reconstructions_judged_as_source": reconstructions.diagonal().sum().item() / reconstructions.sum().item(),
        "conversions_judged_as_target": conversions.diagonal(dim1=1, dim2=2).sum().item() / total,
        "conversions_judged_as_source": conversions.diagonal(dim1=0, dim2=2).sum().item() / total,
        "conversion_confusion": (by_target / by_target.sum(1, keepdim=True)).tolist(),
    }
    if recognizer is not None:
        report["wer_utterances"] = len(references)
        report.update({f"wer_{name}": word_error_rate(references, hypotheses) for name, hypotheses in heard.items()})
    return report


def real_recording_wer(
    convert: Converter,
    recordings: Sequence[tuple[torch.Tensor, str]],
    voices: Sequence[int],
    sampling_rate: int,
    output_rate: int | None = None,
) -> dict:
    """Real speech (`(waveform, transcript)` pairs at `sampling_rate`) converted into each of
    `voices` (coming out at `output_rate`, default the same): {"originals": the recordings' own
    WER, "conversions": [WER of their conversions into each voice]}, heard by PocketSphinx's
    general English model without an added noise floor (real recordings have their own)."""
    output_rate = output_rate or sampling_rate
    recognizer = SpeechRecognizer(noise_snr_db=None)
    references = [text for _, text in recordings]
    converted = [convert(waveform, voices) for waveform, _ in recordings]
    return {
        "originals": word_error_rate(references, [recognizer.transcribe(w, sampling_rate) for w, _ in recordings]),
        "conversions": [
            word_error_rate(references, [recognizer.transcribe(c[column], output_rate) for c in converted])
            for column in range(len(voices))
        ],
    }
