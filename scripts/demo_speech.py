"""The speech part of the main job: the built-in espeak-ng corpus to a speaker-conditioned speech
generator with voice conversion, on CPU.

    bash scripts/demo.sh speech     # = .venv/bin/python scripts/demo_speech.py [--tokenizer-steps N] [--prior-steps N]

1. synthesizes the corpus on first use (10 espeak-ng voices, 200 + 30 sentences each) and trains
   the speech tokenizer (recipes/speech.yaml: 16 kHz -> 250 codes per second, a convolutional
   decoder conditioned on the speaker, trained with spectral and mel losses; here with K=64 and
   half-second crops, to fit a CPU);
2. encodes every utterance of both splits into code sequences;
3. trains a speaker-conditioned WaveNet prior on them (recipes/speech_prior.yaml) and writes the
   bundle to outputs/demo/speech/bundle;
4. loads it with `transformers.pipeline("vq-speech-gen", ...)` and writes WAV files and their
   spectrograms: held-out utterances and their reconstructions, two seconds of new speech per
   speaker, and each held-out utterance converted into another voice; then the held-out
   utterances of the first `--judge-sentences` sentences decoded in all ten voices and judged by
   two judges independent of our models (stage1_tokenizer/evaluation/): a speaker classifier
   fitted on the corpus names the voice of the originals, the reconstructions (the ceiling) and
   the conversions, and PocketSphinx gives the word error rate of originals, reconstructions and
   conversions (`--wer-sentences`); real recordings (pocketsphinx-testdata's LibriVox, fed in at
   22.05 kHz) are converted and transcribed too.
Each stage shows a progress bar; the figures go to outputs/demo/speech/results.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.evaluation.speech_recognizer import SpeechRecognizer, real_recordings
from stage1_tokenizer.evaluation.voice_conversion import corpus_speaker_judge, judge_conversions, real_recording_wer
from stage1_tokenizer.data import SyntheticSpeech
from stage1_tokenizer.common.visualize import plot_spectrograms, save_wav
from stage2_prior import train as prior_cli

REAL_RATE = 22050  # real recordings go in at another rate than the model's, as users' files do
REAL_VOICES = ["us-male", "gb-female"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "demo" / "speech")
    parser.add_argument("--tokenizer-steps", type=int, default=3000, help="the steps measured in docs/speech.md")
    parser.add_argument("--prior-steps", type=int, default=1000)
    parser.add_argument("--codebook-size", type=int, default=64, help="K (the recipe's, for GPUs: 512)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each generated sample")
    parser.add_argument("--judge-sentences", type=int, default=10, help="held-out sentences (x 10 voices) converted and judged")
    parser.add_argument("--wer-sentences", type=int, default=2, help="of them, those (x 10 voices) for the word error rate")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = args.output_dir

    print("1/4 training the speech tokenizer", flush=True)
    tokenizer, tokenizer_metrics = tokenizer_cli.main([
        str(REPO / "recipes" / "speech.yaml"), "--max_steps", str(args.tokenizer_steps), "--eval_every", str(args.tokenizer_steps),
        "--save_every", str(args.tokenizer_steps), "--output_dir", str(out / "tokenizer"), "--overwrite_output_dir",
        # CPU-sized: half-second crops, and a small codebook that leaves no room for the speaker in the codes
        "--segment_length", "8192", "--model.codebook_size", str(args.codebook_size),
    ])  # fmt: skip
    tokenizer_dir = out / "tokenizer" / "model"

    print("2/4 encoding the utterances into code sequences", flush=True)
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(tokenizer_dir), "--dataset", "speech", "--split", split,
                         "--output_dir", str(out / f"codes-{split}"), "--overwrite_output_dir"])  # fmt: skip

    print("3/4 training the speaker-conditioned WaveNet prior", flush=True)
    _, prior_metrics = prior_cli.main([
        str(REPO / "recipes" / "speech_prior.yaml"), "--tokenizer", str(tokenizer_dir), "--train_codes", str(out / "codes-train"),
        "--eval_codes", str(out / "codes-test"), "--max_steps", str(args.prior_steps), "--eval_every", str(args.prior_steps),
        "--save_every", str(args.prior_steps), "--output_dir", str(out / "prior"), "--bundle_dir", str(out / "bundle"),
        "--overwrite_output_dir",
    ])  # fmt: skip

    print("4/4 generating and converting speech with the pipeline", flush=True)
    import transformers

    import pipelines  # noqa: F401  (registers vq-speech-gen)

    speak = transformers.pipeline("vq-speech-gen", model=str(out / "bundle"))
    rate, speakers = speak.sampling_rate, tokenizer.config.speakers
    train, test = SyntheticSpeech("train", rate, speakers=speakers), SyntheticSpeech("test", rate, speakers=speakers)
    folder = out / "wav"

    # held-out utterances, one per speaker (the parallel corpus: the same sentence in every voice)
    originals = [test[i]["input_values"][0] for i in range(len(speakers))]
    reconstructions = [torch.from_numpy(speak(speaker=s, audio=w.numpy(), sampling_rate=rate)["audio"]) for s, w in enumerate(originals)]
    samples = [torch.from_numpy(speak(speaker=s, seconds=args.seconds, seed=s)["audio"]) for s in range(len(speakers))]
    targets = [(s + len(speakers) // 2) % len(speakers) for s in range(len(speakers))]  # a voice far along the list
    converted = [torch.from_numpy(speak(speaker=t, audio=w.numpy(), sampling_rate=rate)["audio"]) for w, t in zip(originals, targets)]
    for s, name in enumerate(speakers):
        save_wav(originals[s], folder / f"original-{name}.wav", rate)
        save_wav(reconstructions[s], folder / f"reconstruction-{name}.wav", rate)
        save_wav(samples[s], folder / f"sample-{name}.wav", rate)
        save_wav(converted[s], folder / f"converted-{name}-to-{speakers[targets[s]]}.wav", rate)
    plot_spectrograms({"original": originals, "reconstruction": reconstructions}, out / "reconstructions.png", rate)
    plot_spectrograms({"sample": samples}, out / "samples.png", rate)
    plot_spectrograms({"source": originals, "converted": converted}, out / "conversions.png", rate)

    # every held-out utterance in every voice through the pipeline, judged by two judges that are not
    # our model: a speaker classifier fitted on the corpus and a speech recogniser
    def convert(waveform, voices, sampling_rate=rate):
        audio = waveform.reshape(-1).numpy()
        return torch.stack([torch.from_numpy(speak(speaker=v, audio=audio, sampling_rate=sampling_rate)["audio"]) for v in voices])

    judged = judge_conversions(
        convert, test, corpus_speaker_judge(train), SpeechRecognizer.for_corpus(rate),
        sentences=args.judge_sentences, wer_sentences=args.wer_sentences,
    )  # fmt: skip
    # real speech at another rate and length: pocketsphinx-testdata's LibriVox recordings, read at 22.05 kHz
    recordings, real_voices = real_recordings(REAL_RATE), [speakers.index(name) for name in REAL_VOICES]
    real_convert = functools.partial(convert, sampling_rate=REAL_RATE)
    real = real_recording_wer(real_convert, recordings, real_voices, REAL_RATE, output_rate=rate)
    save_wav(recordings[0][0], folder / "real-recording.wav", REAL_RATE)
    for name, speech in zip(REAL_VOICES, real_convert(recordings[0][0], real_voices)):
        save_wav(speech, folder / f"real-recording-as-{name}.wav", rate)
    report = {
        "log_mel_distance": tokenizer_metrics["log_mel_distance"],
        "prior_nll_nats_per_code": prior_metrics["nll_nats_per_code"],
        **judged,
        "real_recordings_wer": real["originals"],
        "real_recordings_converted_wer": dict(zip(REAL_VOICES, real["conversions"])),
        "seconds": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))

    print(f"\nWAV files (originals, reconstructions, samples, conversions): {folder}")
    print(f"spectrograms: {out / 'reconstructions.png'}, {out / 'samples.png'}, {out / 'conversions.png'}")
    print(f"held-out log-mel distance {report['log_mel_distance']:.3f}; prior NLL {report['prior_nll_nats_per_code']:.3f} nats per code")
    print(f"{report['utterances']} held-out utterances, each in all {len(speakers)} voices. Speaker judge (chance {report['chance']:.0%}): "
          f"originals {report['judge_on_originals']:.0%} right, reconstructions {report['reconstructions_judged_as_source']:.0%} "
          f"(the ceiling), conversions judged as the target {report['conversions_judged_as_target']:.0%}, as the source "
          f"{report['conversions_judged_as_source']:.0%}")
    print(f"word error rate on {report['wer_utterances']} of them: originals {report['wer_originals']:.3f}, reconstructions "
          f"{report['wer_reconstructions']:.3f}, conversions {report['wer_conversions']:.3f}; real recordings "
          f"{report['real_recordings_wer']:.3f}, converted: " + ", ".join(f"{k} {v:.3f}" for k, v in report["real_recordings_converted_wer"].items()))
    print(f"demo time {report['seconds'] / 60:.1f} min")  # fmt: skip
    print(f"bundle: {out / 'bundle'}\n\nGenerate more:\n")
    print("    import pipelines, transformers")
    print(f'    speech = transformers.pipeline("vq-speech-gen", model="{out / "bundle"}")(speaker="{speakers[0]}", seconds=2)\n')
    return report


if __name__ == "__main__":
    main()
