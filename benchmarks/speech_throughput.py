"""Speed of the speech tokenizer: encoding and decoding throughput in seconds of audio per second,
for the convolutional and the WaveNet decoder, and WaveNet's cached against uncached decoding.

    python benchmarks/speech_throughput.py [--seconds 4] [--wavenet-samples 2048] [--output results.json]

Both tokenizers have the recipe's size (recipes/speech.yaml: 16 kHz, six stride-2 steps, hidden 64,
K=512) and the WaveNet decoder its config's default (64 residual channels, 20 layers); weights
do not change the speed, so they are not trained. Every timing is the median of interleaved
rounds in one process, batch 1:
- encode: `model.encode` of `--seconds` of audio (the same encoder for both decoders);
- decode: `model.decode` of those codes; the WaveNet decoder samples one audio sample per step
  through its queues (use_cache=True), so it is timed on `--wavenet-samples` samples;
- uncached: the WaveNet decoder recomputing the network over all samples so far at each step
  (use_cache=False), on the same codes and seed; the run fails unless both give the same audio.
Prints a markdown table: audio seconds per wall second (higher is faster) and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from stage1_tokenizer import VQVAEConfig, VQVAEModel

RATE = 16000


def build(decoder: str) -> VQVAEModel:
    torch.manual_seed(0)
    config = VQVAEConfig(
        modality="audio", sampling_rate=RATE, hidden_channels=64, code_dim=64, codebook_size=512, quantizer="vq-ema",
        audio_decoder=decoder, speakers=[f"speaker-{i}" for i in range(10)],
    )  # fmt: skip
    return VQVAEModel(config).eval()


def timed(function, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio encoded and decoded by the conv decoder")
    parser.add_argument("--wavenet-samples", type=int, default=2048, help="samples decoded by the WaveNet decoder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    conv, wavenet = build("conv"), build("wavenet")
    length = int(args.seconds * RATE) // 64 * 64
    audio = torch.randn(1, 1, length, generator=torch.Generator().manual_seed(0)).clamp(-1, 1) * 0.3
    speaker = torch.tensor([3])
    codes = conv.encode(audio)
    wavenet_codes = [wavenet.encode(audio)[0][:, : args.wavenet_samples // 64]]
    wavenet_seconds = wavenet_codes[0].shape[1] * 64 / RATE

    def sample(use_cache):
        return wavenet.decode(wavenet_codes, speaker, generator=torch.Generator().manual_seed(0), use_cache=use_cache)

    conv(audio, speaker)  # warm-up: first calls pay one-off set-up costs
    if not torch.equal(sample(True), sample(False)):
        raise RuntimeError("cached and uncached WaveNet decoding returned different audio")
    rows = {"encode": [], "decode, conv": [], "decode, WaveNet (cached)": []}
    for _ in range(args.rounds):  # interleaved, so that the machine's noise hits every row alike
        rows["encode"].append(timed(lambda: conv.encode(audio), 1))
        rows["decode, conv"].append(timed(lambda: conv.decode(codes, speaker), 1))
        rows["decode, WaveNet (cached)"].append(timed(lambda: sample(True), 1))
    uncached = timed(lambda: sample(False), 1)  # one round: it is the slow reference
    seconds = {name: statistics.median(values) for name, values in rows.items()}
    audio_seconds = {"encode": length / RATE, "decode, conv": length / RATE, "decode, WaveNet (cached)": wavenet_seconds}
    results = {name: audio_seconds[name] / seconds[name] for name in seconds}
    results["decode, WaveNet (uncached)"] = wavenet_seconds / uncached
    speedup = results["decode, WaveNet (cached)"] / results["decode, WaveNet (uncached)"]

    print(f"\n16 kHz, batch 1, {torch.get_num_threads()} threads, untrained recipe-size models; encode and conv decode on "
          f"{length / RATE:.1f} s of audio, WaveNet on {wavenet_seconds * 1000:.0f} ms ({wavenet_codes[0].shape[1] * 64} samples); "
          f"medians of {args.rounds} interleaved rounds (uncached: one)\n")  # fmt: skip
    print("| step | audio seconds per second (= x real time) | vs WaveNet cached decoding |")
    print("|---|---|---|")
    wavenet_rate = results["decode, WaveNet (cached)"]
    for name, rate in results.items():
        ratio = rate / wavenet_rate
        print(f"| {name} | {rate:.3g} | {f'{ratio:,.0f}' if ratio >= 100 else f'{ratio:.3g}'}x |")
    print(f"\ncached WaveNet decoding is {speedup:.1f}x faster than uncached, with identical audio")
    report = {"audio_seconds_per_second": results, "wavenet_cache_speedup": speedup, "wavenet_samples": wavenet_codes[0].shape[1] * 64}
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
