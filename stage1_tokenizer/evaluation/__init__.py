"""Judges for the speech tokenizer that do not depend on the model being judged.

- `speech_recognizer`: an independent recogniser (CMU PocketSphinx, offline) and the word error
  rate, for "content survives the codes": WER on originals, reconstructions and voice conversions.
- `phonemes`: per-phoneme timings straight from the espeak-ng synthesizer that made the offline
  corpus, and per-frame phoneme labels aligned with `SyntheticSpeech` utterances, for "codes align
  with phonemes".
- `speaker_judge`: a speaker classifier, for "does converted speech sound like the target?".
- `voice_conversion`: both judges on reconstructions and voice conversions of a parallel corpus
  (the ceiling, the confusion matrix, word error rates) and on converted real recordings; used by
  the speech demo and `benchmarks/speech_conversion.py`.

Import the submodules directly (`from stage1_tokenizer.evaluation.phonemes import ...`): each
pulls in only what it needs (pocketsphinx and jiwer for the recogniser, libespeak-ng for the
phonemes).
"""
