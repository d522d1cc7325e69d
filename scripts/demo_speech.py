"""The speech part of the main job: the built-in espeak-ng corpus to a speaker-conditioned speech
generator with voice conversion, on CPU.

    bash scripts/demo.sh speech     # = .venv/bin/python scripts/demo_speech.py [--tokenizer-steps N] [--prior-steps N]

1. synthesizes the corpus on first use (10 espeak-ng voices, 200 + 30 sentences each) and trains
   the speech tokenizer (recipes/speech.yaml: 16 kHz -> 250 codes per second, a convolutional
   decoder conditioned on the speaker; here with K=64 and half-second crops, to fit a CPU);
2. encodes every utterance of both splits into code sequences;
3. trains a speaker-conditioned WaveNet prior on them (recipes/speech_prior.yaml) and writes the
   bundle to outputs/demo/speech/bundle;
4. loads it with `transformers.pipeline("vq-speech-gen", ...)` and writes WAV files and their
   spectrograms: held-out utterances and their reconstructions, two seconds of new speech per
   speaker, and each held-out utterance converted into another voice, judged by a speaker
   classifier (mel statistics) trained on the corpus.
Each stage shows a progress bar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.evaluation.speaker_judge import SpeakerClassifier
from stage1_tokenizer.data import SyntheticSpeech
from stage1_tokenizer.common.visualize import plot_spectrograms, save_wav
from stage2_prior import train as prior_cli


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "demo" / "speech")
    parser.add_argument("--tokenizer-steps", type=int, default=1500)
    parser.add_argument("--prior-steps", type=int, default=1000)
    parser.add_argument("--codebook-size", type=int, default=64, help="K (the recipe's, for GPUs: 512)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each generated sample")
    args = parser.parse_args(argv)
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

    # does the converted speech sound like its target? a speaker classifier trained on the corpus
    judge = SpeakerClassifier(rate).fit([train[i]["input_values"] for i in range(len(train))], [int(train[i]["speaker"]) for i in range(len(train))])
    held_out = [test[i] for i in range(len(test))]
    waves, sources = [item["input_values"][0] for item in held_out], torch.tensor([int(item["speaker"]) for item in held_out])
    goals = (sources + len(speakers) // 2) % len(speakers)
    converted_all = [torch.from_numpy(speak(speaker=int(t), audio=w.numpy(), sampling_rate=rate)["audio"]) for w, t in zip(waves, goals)]
    report = {
        "log_mel_distance": tokenizer_metrics["log_mel_distance"],
        "prior_nll_nats_per_code": prior_metrics["nll_nats_per_code"],
        "judge_accuracy_on_originals": (judge.predict(waves) == sources).float().mean().item(),
        "converted_judged_as_target": (judge.predict(converted_all) == goals).float().mean().item(),
        "converted_judged_as_source": (judge.predict(converted_all) == sources).float().mean().item(),
        "chance": 1 / len(speakers),
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))

    print(f"\nWAV files (originals, reconstructions, samples, conversions): {folder}")
    print(f"spectrograms: {out / 'reconstructions.png'}, {out / 'samples.png'}, {out / 'conversions.png'}")
    print(f"held-out log-mel distance {report['log_mel_distance']:.3f}; prior NLL {report['prior_nll_nats_per_code']:.3f} nats per code")
    print(f"voice conversion of {len(waves)} held-out utterances: judged as the target voice {report['converted_judged_as_target']:.0%}, "
          f"as the source {report['converted_judged_as_source']:.0%} (chance {report['chance']:.0%}; the judge gets "
          f"{report['judge_accuracy_on_originals']:.0%} of the originals right)")  # fmt: skip
    print(f"bundle: {out / 'bundle'}\n\nGenerate more:\n")
    print("    import pipelines, transformers")
    print(f'    speech = transformers.pipeline("vq-speech-gen", model="{out / "bundle"}")(speaker="{speakers[0]}", seconds=2)\n')
    return report


if __name__ == "__main__":
    main()
