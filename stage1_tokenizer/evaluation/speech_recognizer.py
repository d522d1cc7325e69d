"""An independent speech recogniser and the word error rate: does the content survive the codes?

The recogniser is CMU PocketSphinx (PyPI `pocketsphinx`, whose wheel ships CMU's US English
acoustic model, the CMU pronouncing dictionary and a general language model; it runs offline).
It was trained on none of this project's data and knows nothing about the tokenizer, so the same
judge can score originals, reconstructions and voice conversions.

Three ways to constrain what it may say:

- `SpeechRecognizer.for_corpus()`: the JSGF grammar of the `SyntheticSpeech` sentences
  (`corpus_grammar()`), built from the corpus's own word lists and its six sentence templates.
  Any word of a slot can replace any other (every adjective, person, thing, verb, place and time
  of the corpus is allowed in its slot), so a smeared "ladder" can come out as "bottle", and a
  smeared verb as another verb: the judge still makes the content errors it hears.
- `SpeechRecognizer(vocabulary=words)`: any sequence of the given words, equally likely (a
  uniform unigram language model). Looser, and far less accurate on the corpus.
- `SpeechRecognizer()`: PocketSphinx's general US English language model, for real speech.

Audio is prepared the same way for every input (`prepare`): resampled to 16 kHz, scaled to an RMS of 0.1, padded with 0.3 s of silence at both ends and, by default, given
a low noise floor: seeded Gaussian noise 20 dB below the speech's RMS (`noise_snr_db`). The floor
matters for synthetic speech: espeak-ng's formant synthesis leaves spectral valleys and pauses that
are digitally silent, and their extreme log energies throw the acoustic model, which was trained on
recordings with a noise floor. For real recordings, which have a floor of their own, pass
`noise_snr_db=None` (the added noise costs accuracy there).

Measured on the originals of `SyntheticSpeech("test")` (`main`; 2 CPU cores, one used):

| judge                         | utterances | WER   | seconds per second of audio |
| ----------------------------- | ---------- | ----- | --------------------------- |
| grammar + floor (default)     | 300        | 0.097 | 0.25                        |
| grammar, no floor, PS beams   | 60         | 0.27  | 0.47                        |
| vocabulary, noise floor       | 30         | 0.51  | 0.37                        |
| general LM, noise floor       | 30         | 0.89  | 2.0                         |

The first row is `python -m stage1_tokenizer.evaluation.speech_recognizer --split test`, with
the front end reset before each utterance (it was 0.101 without); the other rows were measured
before that reset. Per voice (grammar, 300): US voices 0.003-0.014 except the high-pitched
us-female-high (0.175); gb-male 0.05, gb-female 0.09, rp-female 0.13, scottish 0.14-0.20,
caribbean-male 0.15. The
judge's errors are real-word confusions within a slot ("found" -> "opened", "harbor" -> "hill").
On the real LibriVox recordings the general model gets WER 0.28 (0.45 with the noise floor).

`word_error_rate(references, hypotheses)` is the corpus-level WER (total word edits over total
reference words, with jiwer), after the same normalisation on both sides (`normalize_text`:
lower case, punctuation dropped, whitespace collapsed).

`real_recording(i)` / `real_recordings()` load the five LibriVox recordings (a man reading
"Sense and Sensibility", 16 kHz) and their transcripts that Debian's `pocketsphinx-testdata`
package ships under /usr/share/pocketsphinx/test/data/librivox.

A `SpeechRecognizer` holds one PocketSphinx decoder, which is not thread-safe: use one recogniser
per thread or process. Run this module to measure the judge on the corpus:
`python -m stage1_tokenizer.evaluation.speech_recognizer --split test` (see `main`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import jiwer
import numpy as np
import pocketsphinx
import torch
import torchaudio.functional as AF

from ..data import speech_corpus

Waveform = Union[torch.Tensor, np.ndarray]

RECOGNIZER_SAMPLING_RATE = 16000  # the rate of PocketSphinx's en-us acoustic model
POCKETSPHINX_TESTDATA = Path("/usr/share/pocketsphinx/test/data")  # Debian's pocketsphinx-testdata
_TARGET_RMS = 0.1
_PADDING_SECONDS = 0.3
_NOISE_SEED = 0
# Beams for grammars, a little wider than PocketSphinx's defaults (1e-48, 7e-29), with which the
# search now and then prunes every path to the grammar's final state and returns a partial sentence
# (WER 0.079 instead of 0.064 on 80 train-split originals, at 0.2 instead of 0.43 s per second).
_GRAMMAR_BEAM = 1e-60
_GRAMMAR_WORD_BEAM = 1e-40


# -- text and WER ---------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """Lower case, punctuation dropped (apostrophes inside words kept), whitespace collapsed:
    "Last night, the baker's dog ran." -> "last night the baker's dog ran"."""
    return " ".join(re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower()))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level word error rate: (substitutions + deletions + insertions) over all utterances,
    divided by the number of reference words, after `normalize_text` on both sides.

    An empty hypothesis counts all its reference's words as deleted. ValueError if the lists'
    lengths differ or a reference has no words (the rate would be undefined).
    """
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be lists of strings, one per utterance, not strings.")
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references but {len(hypotheses)} hypotheses.")
    if not references:
        raise ValueError("no utterances to score.")
    references = [normalize_text(text) for text in references]
    hypotheses = [normalize_text(text) for text in hypotheses]
    empty = [index for index, text in enumerate(references) if not text]
    if empty:
        raise ValueError(f"references {empty[:5]} have no words after normalisation; the WER is undefined for them.")
    return float(jiwer.wer(references, hypotheses))


# -- the corpus grammar ---------------------------------------------------------------------------


def _alternatives(options: Sequence[str]) -> str:
    return " | ".join(sorted(set(options)))


def _corpus_rules() -> dict[str, list[str]]:
    """The corpus grammar as rules: name -> alternatives (word strings that may name other rules)."""
    adjectives, people = speech_corpus.ADJECTIVES, speech_corpus.PEOPLE
    verbs = speech_corpus.VERBS

    def with_article(words: Sequence[str]) -> list[str]:  # the corpus's `_article`: "an" before a vowel letter
        vowel = [word for word in words if word[0] in "aeiou"]
        consonant = [word for word in words if word[0] not in "aeiou"]
        return [f"{article} ({_alternatives(group)})" for article, group in (("a", consonant), ("an", vowel)) if group]

    return {
        "adjective": list(adjectives),
        "person": list(people),
        "thing": list(speech_corpus.THINGS),
        "past": [past for _, past in verbs],
        "base": [base for base, _ in verbs],
        "place": [f"({_alternatives(speech_corpus.PREPOSITIONS)}) the ({_alternatives(speech_corpus.PLACES)})"],
        "time": list(speech_corpus.TIMES),
        "a_adjective": with_article(adjectives),
        "a_person": with_article(people),
        # The six templates of the corpus's `_random_sentence`, in its order.
        "sentence": [
            "the <adjective> <person> <past> the <thing> <place>",
            "<a_person> <past> <a_adjective> <thing> <time>",
            "the <person> and the <person> <past> the <adjective> <thing> <place>",
            "why did the <adjective> <person> <base> the <thing> <time>",
            "<time> the <person> <past> <a_adjective> <thing>",
            "the <thing> <place> was <adjective> and <adjective>",
        ],
    }


def corpus_grammar() -> str:
    """The JSGF grammar of the `SyntheticSpeech` sentences (lower case, no punctuation), built from
    the corpus's word lists: public rule <sentence>, one alternative per template.

    It is a little looser than the corpus, which never repeats a slot's word within a sentence
    ("the cat and the cat ..."), so every corpus sentence is in it.
    """
    rules = _corpus_rules()
    lines = ["#JSGF V1.0;", "grammar corpus;"]
    for name, options in rules.items():
        public = "public " if name == "sentence" else ""
        lines.append(f"{public}<{name}> = {_alternatives(options) if name != 'sentence' else ' | '.join(options)};")
    return "\n".join(lines) + "\n"


def corpus_grammar_pattern() -> re.Pattern:
    """A regular expression that matches exactly the word strings of `corpus_grammar()` (for
    checking that the grammar covers the corpus)."""
    rules = _corpus_rules()

    def expand(text: str) -> str:  # JSGF "(a | b)" -> regex "(?:a|b)", then the rule references
        text = text.replace("(", "(?:").replace(" | ", "|")
        return re.sub(r"<(\w+)>", lambda match: "(?:" + "|".join(map(expand, rules[match[1]])) + ")", text)

    return re.compile(expand("<sentence>"))


def _grammar_words(grammar: str) -> set[str]:
    """The words of a JSGF grammar: everything but its header, rule names, keywords and operators."""
    body = "\n".join(line for line in grammar.splitlines() if not line.lstrip().startswith(("#", "grammar ", "//")))
    body = re.sub(r"<[^>]*>|\bpublic\b|/[^/]*/", " ", body)
    return set(re.findall(r"[^\s()|\[\]=;*+]+", body.lower()))


def corpus_vocabulary() -> list[str]:
    """Every word of the corpus grammar, sorted (177 words)."""
    return sorted(_grammar_words(corpus_grammar()))


# -- the recogniser -------------------------------------------------------------------------------
def _as_mono_float(waveform: Waveform) -> np.ndarray:
    """float64 mono samples from a tensor or array of shape (T,), (1, T) or (1, 1, T)."""
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    samples = np.asarray(waveform)
    if samples.dtype == np.int16:  # 16-bit PCM, as files store it
        samples = samples / 32768.0
    elif not np.issubdtype(samples.dtype, np.floating):
        raise TypeError(f"expected a float waveform in [-1, 1] (or int16 PCM), got dtype {samples.dtype}.")
    samples = np.squeeze(samples.astype(np.float64))
    if samples.ndim != 1:
        raise ValueError(
            f"expected one mono waveform of shape (T,), (1, T) or (1, 1, T), got shape {np.shape(waveform)}."
        )
    if samples.size == 0 or not np.all(np.isfinite(samples)):
        raise ValueError("the waveform is empty or holds NaN or infinite samples.")
    return samples


class SpeechRecognizer:
    """PocketSphinx's US English recogniser, constrained by a JSGF `grammar`, by a `vocabulary`, or
    by neither (its general language model).

    `sampling_rate` is the rate of the waveforms given to `transcribe` when it is not told one.
    `noise_snr_db` is the level of the seeded noise floor added before recognition, in dB below the
    speech (None: none); `padding_seconds` of silence go on each side. `beam` and `word_beam` are
    PocketSphinx's `-beam`/`-pbeam` and `-wbeam` (default: 1e-60 and 1e-40 with a grammar,
    PocketSphinx's own otherwise). See the module's docstring for why.
    """

    def __init__(
        self,
        grammar: str | None = None,
        vocabulary: Sequence[str] | None = None,
        sampling_rate: int = RECOGNIZER_SAMPLING_RATE,
        *,
        noise_snr_db: float | None = 20.0,
        padding_seconds: float = _PADDING_SECONDS,
        beam: float | None = None,
        word_beam: float | None = None,
    ):
        if grammar is not None and vocabulary is not None:
            raise ValueError("pass a grammar or a vocabulary, not both.")
        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int) or sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be a positive integer, got {sampling_rate!r}.")
        self.sampling_rate = sampling_rate
        self.noise_snr_db = noise_snr_db
        self.padding_seconds = padding_seconds
        self.mode = "grammar" if grammar is not None else "vocabulary" if vocabulary is not None else "general"

        settings: dict = dict(samprate=RECOGNIZER_SAMPLING_RATE, loglevel="FATAL", remove_noise=False)
        if self.mode == "grammar":
            beam = _GRAMMAR_BEAM if beam is None else beam
            word_beam = _GRAMMAR_WORD_BEAM if word_beam is None else word_beam
        if beam is not None:
            settings.update(beam=beam, pbeam=beam)
        if word_beam is not None:
            settings.update(wbeam=word_beam)
        if self.mode == "general":
            self._decoder = pocketsphinx.Decoder(**settings)
            return
        self._decoder = pocketsphinx.Decoder(lm=None, **settings)
        if self.mode == "grammar":
            words = _grammar_words(grammar)
        else:
            words = {normalize_text(word) for word in vocabulary} - {""}
            if not words:
                raise ValueError("the vocabulary holds no words.")
        missing = sorted(word for word in words if self._decoder.lookup_word(word) is None)
        if missing:
            raise ValueError(
                f"{len(missing)} words are not in PocketSphinx's pronouncing dictionary (CMUdict): {missing[:10]}; "
                "spell them as CMUdict does or leave them out."
            )
        if self.mode == "grammar":
            self._decoder.add_jsgf_string("constraint", grammar)
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "vocabulary.arpa")
                Path(path).write_text(_uniform_unigram_arpa(sorted(words)))
                self._decoder.add_lm_file("constraint", path)
        self._decoder.activate_search("constraint")

    @classmethod
    def for_corpus(cls, sampling_rate: int = RECOGNIZER_SAMPLING_RATE, **kwargs) -> SpeechRecognizer:
        """The judge for `SyntheticSpeech` utterances: constrained by `corpus_grammar()`."""
        return cls(grammar=corpus_grammar(), sampling_rate=sampling_rate, **kwargs)

    def prepare(self, waveform: Waveform, sampling_rate: int | None = None) -> np.ndarray:
        """The 16 kHz 16-bit samples that the decoder gets for `waveform` (see the module docstring)."""
        samples = _as_mono_float(waveform)
        rate = sampling_rate or self.sampling_rate
        if rate != RECOGNIZER_SAMPLING_RATE:
            samples = AF.resample(torch.from_numpy(samples), rate, RECOGNIZER_SAMPLING_RATE).numpy()
        rms = math.sqrt(float(np.mean(samples**2)))
        if rms > 0:
            samples = samples * (_TARGET_RMS / rms)
        padding = np.zeros(round(self.padding_seconds * RECOGNIZER_SAMPLING_RATE))
        samples = np.concatenate([padding, samples, padding])
        if self.noise_snr_db is not None:
            noise = np.random.default_rng(_NOISE_SEED).standard_normal(samples.size)
            samples = samples + noise * (_TARGET_RMS * 10 ** (-self.noise_snr_db / 20))
        return np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)

    def transcribe(self, waveform: Waveform, sampling_rate: int | None = None) -> str:
        """The words heard in one utterance, lower case, space-separated ("" if none).

        `waveform` is a float tensor or array in [-1, 1] (or int16 PCM) of shape (T,), (1, T) or
        (1, 1, T) at `sampling_rate` (default: the recogniser's `sampling_rate`); any rate works.
        The same input always gives the same transcript, whatever came before (the noise floor is
        seeded and the feature front end reset).
        """
        samples = self.prepare(waveform, sampling_rate)
        # the feature front end keeps state from the utterance before (1 in 40 held-out transcripts
        # changed with the order of the calls); a reset makes each transcript depend on its input alone
        self._decoder.reinit_feat()
        self._decoder.start_utt()
        self._decoder.process_raw(samples.tobytes(), no_search=False, full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        if hypothesis is None:
            return ""
        # Drop fillers and alternative-pronunciation marks ("word(2)") if any slip through.
        words = [re.sub(r"\(\d+\)$", "", word) for word in hypothesis.hypstr.split()]
        return " ".join(word for word in words if not word.startswith(("<", "[", "++")))


def _uniform_unigram_arpa(words: Sequence[str]) -> str:
    """An ARPA language model in which every word (and the sentence end) is equally likely."""
    log_probability = -math.log10(len(words) + 1)
    lines = ["\\data\\", f"ngram 1={len(words) + 2}", "", "\\1-grams:", "-99.0000 <s> 0.0000"]
    lines += [f"{log_probability:.4f} {word} 0.0000" for word in words]
    lines += [f"{log_probability:.4f} </s> 0.0000", "", "\\end\\", ""]
    return "\n".join(lines)


# -- real speech ----------------------------------------------------------------------------------
def _librivox_folder() -> Path:
    folder = POCKETSPHINX_TESTDATA / "librivox"
    if not (folder / "transcription").is_file():
        raise FileNotFoundError(
            f"{folder} is missing: the real recordings come from Debian's pocketsphinx-testdata package. "
            "Install it with `sudo apt-get install pocketsphinx-testdata`."
        )
    return folder


def real_recordings(sampling_rate: int = RECOGNIZER_SAMPLING_RATE) -> list[tuple[torch.Tensor, str]]:
    """Real human speech with transcripts, offline: the five LibriVox recordings (one male reader,
    "Sense and Sensibility", chapter 1; public domain; 16 kHz 16-bit WAV, 3 to 7 s each) that
    Debian's `pocketsphinx-testdata` ships in /usr/share/pocketsphinx/test/data/librivox, with the
    transcripts of its `transcription` file (lower case, no punctuation; one keeps the reader's
    repeated "a": "had he married a more a amiable woman").

    Returns `(waveform (1, T) float32 in [-1, 1] at sampling_rate, transcript)` pairs in file order.
    """
    from stage1_tokenizer.data.audio import read_audio

    folder = _librivox_folder()
    recordings = []
    for line in (folder / "transcription").read_text().splitlines():
        match = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*", line)
        if match:
            waveform = read_audio(folder / f"{match[2]}.wav", sampling_rate)
            recordings.append((waveform, " ".join(match[1].split())))
    return recordings


def real_recording(index: int = 0, sampling_rate: int = RECOGNIZER_SAMPLING_RATE) -> tuple[torch.Tensor, str]:
    """One of `real_recordings()`: `(waveform (1, T), transcript)`; index 1 is the shortest
    ("he was not an ill disposed young man", 3 s)."""
    return real_recordings(sampling_rate)[index]


# -- measuring the judge --------------------------------------------------------------------------
def evaluate(
    recognizer: SpeechRecognizer, utterances: Sequence[tuple[Waveform, str]], sampling_rate: int
) -> Mapping[str, object]:
    """Transcribes `(waveform, reference text)` pairs: {"wer", "utterances", "audio_seconds",
    "seconds", "seconds_per_audio_second", "references", "hypotheses"}."""
    references, hypotheses = [], []
    audio_seconds = 0.0
    start = time.perf_counter()
    for waveform, text in utterances:
        audio_seconds += _as_mono_float(waveform).size / sampling_rate
        hypotheses.append(recognizer.transcribe(waveform, sampling_rate))
        references.append(text)
    seconds = time.perf_counter() - start
    return {
        "wer": word_error_rate(references, hypotheses),
        "utterances": len(references),
        "audio_seconds": audio_seconds,
        "seconds": seconds,
        "seconds_per_audio_second": seconds / audio_seconds,
        "references": references,
        "hypotheses": hypotheses,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Measures the judge: WER and speed on `SyntheticSpeech` originals (per speaker too) and, with
    --real, on the LibriVox recordings with the general language model."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--num-sentences", type=int, default=None, help="default: the split's default")
    parser.add_argument("--mode", default="grammar", choices=("grammar", "vocabulary", "general"))
    parser.add_argument("--sampling-rate", type=int, default=16000)
    parser.add_argument("--noise-snr-db", type=float, default=20.0, help="negative: no noise floor")
    parser.add_argument("--real", action="store_true", help="also the real LibriVox recordings (general LM)")
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args(argv)
    snr = None if args.noise_snr_db < 0 else args.noise_snr_db

    from stage1_tokenizer.data import SyntheticSpeech

    corpus = SyntheticSpeech(args.split, args.sampling_rate, num_sentences=args.num_sentences)
    recognizer = {
        "grammar": lambda: SpeechRecognizer.for_corpus(args.sampling_rate, noise_snr_db=snr),
        "vocabulary": lambda: SpeechRecognizer(
            vocabulary=corpus_vocabulary(), sampling_rate=args.sampling_rate, noise_snr_db=snr
        ),
        "general": lambda: SpeechRecognizer(sampling_rate=args.sampling_rate, noise_snr_db=snr),
    }[args.mode]()
    utterances = [(corpus[index]["input_values"], corpus.texts[index]) for index in range(len(corpus))]
    result = evaluate(recognizer, utterances, args.sampling_rate)
    print(
        f"{args.mode} judge, noise floor {snr} dB, SyntheticSpeech({args.split!r}): {result['utterances']} utterances, "
        f"{result['audio_seconds']:.0f} s of audio: WER {result['wer']:.4f}; {result['seconds']:.0f} s, "
        f"{result['seconds_per_audio_second']:.3f} s per second of audio"
    )
    speakers = len(corpus.speakers)
    for speaker, name in enumerate(corpus.speakers):
        wer = word_error_rate(result["references"][speaker::speakers], result["hypotheses"][speaker::speakers])
        print(f"  {name:16s} WER {wer:.3f}")
    if args.show_errors:
        for reference, hypothesis in zip(result["references"], result["hypotheses"]):
            if normalize_text(reference) != normalize_text(hypothesis):
                print(f"  ref: {normalize_text(reference)}\n  hyp: {hypothesis}")
    if args.real:
        for real_snr in (None, snr):
            general = SpeechRecognizer(noise_snr_db=real_snr)
            real = evaluate(general, real_recordings(), RECOGNIZER_SAMPLING_RATE)
            print(
                f"general LM, noise floor {real_snr} dB, LibriVox (pocketsphinx-testdata): {real['utterances']} "
                f"utterances, {real['audio_seconds']:.0f} s: WER {real['wer']:.4f}, "
                f"{real['seconds_per_audio_second']:.3f} s per second of audio"
            )
            for reference, hypothesis in zip(real["references"], real["hypotheses"]):
                print(f"  ref: {reference}\n  hyp: {hypothesis}")


if __name__ == "__main__":
    main()
