"""The speech judges: the word error rate, the independent recogniser (PocketSphinx with the corpus
grammar), and the phoneme labels from espeak-ng's phoneme events."""

import math
import shutil

import numpy as np
import pytest
import torch

from stage1_tokenizer.data import SyntheticSpeech, synthetic_sentences
from stage1_tokenizer.evaluation.phonemes import (
    SILENCE,
    Phoneme,
    corpus_frame_labels,
    corpus_utterance,
    dataset_frame_labels,
    espeak_command_line,
    frame_labels,
    is_pause,
    is_vowel,
    segment_rms,
    synthesize,
)
from stage1_tokenizer.evaluation.speech_recognizer import (
    POCKETSPHINX_TESTDATA,
    SpeechRecognizer,
    corpus_grammar_pattern,
    corpus_vocabulary,
    normalize_text,
    real_recording,
    word_error_rate,
)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")

# Unseen test sentences of the corpus, in voices the recogniser knows well and in harder ones.
SENTENCES = synthetic_sentences(3, 10_000)


# -- word error rate --------------------------------------------------------------------------------
def test_word_error_rate_of_identical_text_is_zero_after_normalisation():
    assert normalize_text("  Last night, the Baker's DOG ran!") == "last night the baker's dog ran"
    assert word_error_rate(["Why did the cat run?", "The end."], ["why did the cat run", "the end"]) == 0.0


def test_word_error_rate_counts_known_edits_exactly():
    # one substitution (brown -> red) and one insertion (jumps) over 4 words
    assert word_error_rate(["the quick brown fox"], ["the quick red fox jumps"]) == pytest.approx(2 / 4)
    # corpus level: 1 deletion + 2 insertions over 3 + 2 reference words
    assert word_error_rate(["a b c", "d e"], ["a c", "d e f g"]) == pytest.approx(3 / 5)
    assert word_error_rate(["one two three"], [""]) == 1.0  # nothing heard: all deleted
    with pytest.raises(ValueError, match="no words"):
        word_error_rate(["..."], ["a"])
    with pytest.raises(ValueError, match="2 references but 1"):
        word_error_rate(["a", "b"], ["a"])


def test_corpus_grammar_covers_every_corpus_sentence_and_no_other_shapes():
    pattern = corpus_grammar_pattern()
    sentences = synthetic_sentences(1000) + synthetic_sentences(100, 10_000)
    assert all(pattern.fullmatch(normalize_text(sentence)) for sentence in sentences)
    assert not pattern.fullmatch("the quiet farmer carried the lamp")  # no place: not a template
    assert not pattern.fullmatch("a old farmer carried the lamp near the park")  # wrong article
    assert len(corpus_vocabulary()) == 177


# -- the recogniser ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recognizer():
    return SpeechRecognizer.for_corpus(16000)


def test_recognizer_transcribes_corpus_utterances_with_low_wer(recognizer):
    references, hypotheses = [], []
    for text, speaker in zip(SENTENCES, ("us-male", "us-female", "gb-male")):
        utterance = corpus_utterance(text, speaker, 16000)
        references.append(text)
        hypotheses.append(recognizer.transcribe(torch.from_numpy(utterance.waveform)[None]))
    assert word_error_rate(references, hypotheses) <= 0.1, hypotheses


def test_recognizer_resamples_any_rate_and_accepts_arrays(recognizer):
    text = SENTENCES[0]
    utterance = corpus_utterance(text, "us-male", 22050)  # no resampling in the corpus processing
    as_array = recognizer.transcribe(utterance.waveform, 22050)
    assert word_error_rate([text], [as_array]) <= 0.2
    int16 = np.round(utterance.waveform * 32767).astype(np.int16)
    assert recognizer.transcribe(int16[None, None], 22050) == as_array
    with pytest.raises(ValueError, match="mono"):
        recognizer.transcribe(np.zeros((2, 1000), np.float32))


def test_recognizer_hears_nothing_right_in_reversed_speech_or_noise(recognizer):
    text = SENTENCES[0]
    waveform = torch.from_numpy(corpus_utterance(text, "us-male", 16000).waveform)
    reversed_speech = recognizer.transcribe(waveform.flip(0))
    noise = recognizer.transcribe(0.3 * torch.randn(3 * 16000).clamp(-1, 1))
    assert word_error_rate([text], [reversed_speech]) >= 0.5, reversed_speech
    assert word_error_rate([text], [noise]) >= 0.8, noise
    # The judge can say wrong words of the vocabulary: whatever it hears is in the corpus's words.
    assert set(reversed_speech.split()) <= set(corpus_vocabulary())


@pytest.mark.skipif(
    not (POCKETSPHINX_TESTDATA / "librivox").is_dir(), reason="needs pocketsphinx-testdata (apt-get install)"
)
def test_general_recognizer_on_a_real_recording():
    waveform, transcript = real_recording(4)
    assert transcript == "he might even have been made amiable himself"
    assert waveform.shape[0] == 1 and 2 < waveform.shape[1] / 16000 < 5
    hypothesis = SpeechRecognizer(noise_snr_db=None).transcribe(waveform)
    assert word_error_rate([transcript], [hypothesis]) <= 0.3, hypothesis


# -- phonemes -----------------------------------------------------------------------------------------
def test_library_waveform_equals_the_command_line():
    for speaker in ("us-female-high", "scottish-male"):  # two in one process: no state carried over
        synthesis = synthesize(SENTENCES[1], speaker)
        command_line = espeak_command_line(SENTENCES[1], speaker)
        assert synthesis.sampling_rate == 22050
        np.testing.assert_array_equal(np.round(synthesis.waveform * 32768).astype(np.int16), command_line)


def test_phonemes_are_ordered_cover_the_utterance_and_follow_the_energy():
    synthesis = synthesize(SENTENCES[2], "gb-female")
    phonemes = synthesis.phonemes
    assert phonemes[0].start == 0 and phonemes[-1].end == synthesis.waveform.size
    assert all(a.end == b.start for a, b in zip(phonemes, phonemes[1:]))
    assert all(p.end > p.start and p.phoneme for p in phonemes)
    levels = segment_rms(synthesis.waveform, phonemes)
    pauses = [level for p, level in zip(phonemes, levels) if is_pause(p.phoneme)]
    vowels = [level for p, level in zip(phonemes, levels) if is_vowel(p.phoneme)]
    assert len(pauses) >= 2 and len(vowels) >= 5
    assert max(pauses) < 0.02 and min(vowels) > 0.02
    assert np.median(vowels) > 20 * np.median(pauses)


def test_frame_labels_take_the_phoneme_covering_most_of_each_frame():
    phonemes = [Phoneme("_", 0, 3), Phoneme("a", 3, 10), Phoneme("b", 10, 12)]
    # [0, 4): "_" 3 samples, "a" 1; [8, 12): a tie, the earlier wins; [12, 16): past the end
    assert frame_labels(phonemes, num_frames=4, hop=4) == ["_", "a", "a", SILENCE]
    assert frame_labels(phonemes, num_frames=2, hop=4, offset=2) == ["a", "a"]
    assert frame_labels(phonemes, num_frames=6, hop=2) == ["_", "_", "a", "a", "a", "b"]


def test_labels_line_up_with_synthetic_speech_utterances(tmp_path):
    corpus = SyntheticSpeech("test", 16000, num_sentences=1, speakers=["us-male", "rp-female"], cache_dir=tmp_path)
    labels = dataset_frame_labels(corpus, hop=64)
    for index, speaker in enumerate(corpus.speakers):
        stored = corpus[index]["input_values"][0].numpy()
        utterance = corpus_utterance(corpus.texts[index], speaker, 16000)
        assert utterance.waveform.size == stored.size
        assert np.abs(utterance.waveform - stored).max() <= 1.5 / 32768  # the file's 16-bit rounding
        assert utterance.phonemes[-1].end == stored.size
        assert len(labels[index]) == math.ceil(stored.size / 64)  # one per code of 64 samples (4 ms)
        assert labels[index] == corpus_frame_labels(corpus.texts[index], speaker, 64)
        assert labels[index][0] == SILENCE  # the lead-in before the first phoneme
        assert sum(is_vowel(label) for label in labels[index]) > len(labels[index]) / 5
    assert len(corpus_frame_labels(corpus.texts[0], "us-male", 256, num_frames=10)) == 10
