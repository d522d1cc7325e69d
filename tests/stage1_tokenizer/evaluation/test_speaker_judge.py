"""The speaker judge of voice conversion: a nearest-class-mean classifier on mel statistics."""

import math

import torch

from stage1_tokenizer.evaluation.speaker_judge import SpeakerClassifier

RATE = 8000


def test_speaker_classifier_separates_pitches():
    t = torch.arange(RATE) / RATE
    generator = torch.Generator().manual_seed(0)

    def voice(f0):  # a harmonic tone with a little noise
        wave = sum(torch.sin(2 * math.pi * f0 * h * t) / h for h in range(1, 6))
        return 0.2 * wave + 0.01 * torch.randn(RATE, generator=generator)

    train = [voice(f) for f in (100, 105, 110, 220, 230, 240)]
    classifier = SpeakerClassifier(RATE).fit(train, [0, 0, 0, 1, 1, 1])
    assert classifier.predict([voice(103), voice(235)]).tolist() == [0, 1]
