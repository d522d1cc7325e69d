"""The benchmarks (the README's main job among them) run end to end on tiny settings."""

import argparse
import json
import math
from pathlib import Path

import pytest
import torch


def test_quality_benchmark_writes_its_table_and_pictures(tmp_path, load_benchmark):
    quantizer_quality = load_benchmark("quantizer_quality")
    runs = quantizer_quality.main(
        ["--steps", "4", "--seeds", "0", "1", "--eval-limit", "200", "--variants", "vq", "gmvq", "scq-paper",
         "--codebook-size", "32", "--num-examples", "4", "--output-dir", str(tmp_path), "--output", str(tmp_path / "results.md")]  # fmt: skip
    )
    equal_steps = [(r["variant"], r["seed"]) for r in runs if r["equal"] == "steps"]
    assert equal_steps == [("vq", 0), ("gmvq", 0), ("scq-paper", 0), ("vq", 1), ("gmvq", 1), ("scq-paper", 1)]
    for run in runs:
        for split in ("validation", "test"):
            assert 0 < run[split]["mse_from_codes"] < 1 and 0 < run[split]["codebook_used"] <= 1
    table = (tmp_path / "results.md").read_text()
    assert "| gmvq, +Entropy weight beta=0.01 (default) |" in table and " ± " in table and "validation MSE" in table
    assert "Chosen on validation" in table and "- scq: scq, paper layer" in table  # the only scq variant run
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == len(runs)
    assert (tmp_path / "reconstructions.png").stat().st_size > 0 and (tmp_path / "codebook_usage.png").exists()
    assert (tmp_path / "runs" / "gmvq-seed0-steps4" / "model" / "model.safetensors").exists()


def test_gmvq_sweep_reads_only_the_validation_split(tmp_path, load_benchmark):
    gmvq_sweep = load_benchmark("gmvq_sweep")
    runs = gmvq_sweep.main(["--steps", "2", "--seeds", "0", "--gammas", "0.01", "--betas", "elbo", "0.1", "--eval-limit", "50",
                            "--codebook-size", "32", "--output-dir", str(tmp_path), "--output", str(tmp_path / "sweep.md")])  # fmt: skip
    assert [(r["gamma"], r["beta"]) for r in runs] == [(0.01, None), (0.01, 0.1)]
    assert all(set(r) == {"gamma", "beta", "seed", "steps", "validation"} for r in runs)  # no test split
    assert all(0 < r["validation"]["mse_from_codes"] < 1 for r in runs)
    table = (tmp_path / "sweep.md").read_text()
    assert table.count("(lowest MSE)") == 1 and "| 0.01 | elbo" in table and "| 0.01 | 0.1" in table
    best = min(runs, key=lambda r: r["validation"]["mse_from_codes"])
    assert f"| {best['beta'] if best['beta'] is not None else 'elbo'} (lowest MSE) |" in table
    assert len(json.loads((tmp_path / "sweep.json").read_text())["runs"]) == 2


def test_speed_benchmark_reports_ratios(tmp_path, load_benchmark):
    quantizer_speed = load_benchmark("quantizer_speed")
    median = quantizer_speed.main(["--vectors", "2048", "--dim", "16", "--codebook-size", "64", "--repeats", "2", "--runs", "2",
                                   "--output", str(tmp_path / "speed.md")])  # fmt: skip
    assert {"floor", "vq", "vq-ema", "gmvq", "scq", quantizer_speed.SCQ_TORCH, "vector-quantize-pytorch (EMA)"} <= set(median)
    assert median["vq"] == 1.0 and all(value > 0 for value in median.values())
    report = (tmp_path / "speed.md").read_text()
    assert report.count("| scq |") == 3 and "over the 2 runs" in report and "Command: `python benchmarks/quantizer_speed.py" in report


def test_prior_sampling_benchmark_checks_cached_equals_uncached(capsys, load_benchmark):
    prior_sampling = load_benchmark("prior_sampling")

    rows = prior_sampling.main(["--quick", "--priors", "wavenet,transformer"])
    assert [r["prior"] for r in rows] == ["wavenet", "transformer"]
    assert all(r["cached_s"] > 0 and r["uncached_s"] > 0 for r in rows)
    assert "| wavenet | 256 |" in capsys.readouterr().out


def test_prior_quality_benchmark_reports_nll_against_references(tmp_path, load_benchmark):
    prior_quality = load_benchmark("prior_quality")

    rows = prior_quality.main(["--tokenizer-steps", "3", "--steps", "2", "--train-limit", "256", "--test-limit", "64",
                               "--priors", "pixelcnn,transformer, unconditional", "--output-dir", str(tmp_path),
                               "--output", str(tmp_path / "docs" / "prior_quality.md")])  # fmt: skip
    assert [r["prior"] for r in rows] == ["pixelcnn", "transformer, unconditional"]
    assert all(0 < r["nll_nats_per_code"] < 10 for r in rows)
    table = (tmp_path / "results.md").read_text()
    assert "log K (uniform)" in table and "| pixelcnn |" in table and "train marginal, held-out cross-entropy" in table
    published = (tmp_path / "docs" / "prior_quality.md").read_text()
    assert published.startswith("`python benchmarks/prior_quality.py --tokenizer-steps 3") and table in published
    saved = json.loads((tmp_path / "docs" / "prior_quality.json").read_text())
    assert [r["nll_nats_per_code"] for r in saved["priors"]] == [r["nll_nats_per_code"] for r in rows]
    assert (tmp_path / "samples-pixelcnn.png").is_file()


def test_the_marginal_reference_is_a_held_out_cross_entropy(load_benchmark):
    prior_quality = load_benchmark("prior_quality")
    train, test = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 2])
    # train counts + 1 over K=4: (3, 3, 1, 1) / 8; the test codes 0 and 2
    expected = -(math.log(3 / 8) + math.log(1 / 8)) / 2
    assert prior_quality.marginal_cross_entropy(train, test, 4) == pytest.approx(expected)


def test_speech_throughput_benchmark_reports_ratios(capsys, load_benchmark):
    speech_throughput = load_benchmark("speech_throughput")

    report = speech_throughput.main(["--seconds", "0.25", "--wavenet-samples", "128", "--rounds", "1"])
    rates = report["audio_seconds_per_second"]
    assert set(rates) == {"encode", "decode, conv", "decode, WaveNet (cached)", "decode, WaveNet (uncached)"}
    assert all(rate > 0 for rate in rates.values()) and report["wavenet_cache_speedup"] > 1
    assert "identical audio" in capsys.readouterr().out


def test_frames_throughput_benchmark_reports_every_step(tmp_path, load_benchmark):
    frames_throughput = load_benchmark("frames_throughput")

    flags = ["--batch-size", "2", "--pixelcnn-frames", "1", "--rounds", "1", "--source-frames", "12"]
    fps = frames_throughput.main([*flags, "--output", str(tmp_path / "fps.md")])
    assert len(fps) == 6 and all(rate > 0 for rate in fps.values())
    table = (tmp_path / "fps.md").read_text()
    assert "| decode 3 codes -> 21x21 codes (PixelCNN, cached) |" in table and "Command: `python benchmarks/frames_throughput.py" in table
    assert json.loads((tmp_path / "fps.json").read_text())["frames_per_second"] == fps


def test_speech_conversion_table_reports_ratios_to_each_seeds_originals(load_benchmark):
    """The table of benchmarks/speech_conversion.py on the figures of two made-up seeds (the
    judging itself is tested on a trained tokenizer in tests/stage1_tokenizer/test_train_audio.py)."""
    speech_conversion = load_benchmark("speech_conversion")
    speakers = ["a", "b", "c"]

    def run(seed, wer_reconstructions, as_target):
        return {
            "seed": seed, "train_cpu_seconds": 600.0 * (seed + 1), "utterances": 90, "chance": 1 / 3, "judge_on_originals": 0.99,
            "reconstructions_judged_as_source": 0.9, "conversions_judged_as_target": as_target, "conversions_judged_as_source": 0.1,
            "conversion_confusion": [[0.0, 0.5, 0.5], [0.2, 0.8, 0.0], [0.0, 0.4, 0.6]], "wer_utterances": 30,
            "wer_originals": 0.1, "wer_reconstructions": wer_reconstructions, "wer_conversions": 0.3,
            "real": {"originals": 0.28, "conversions": [0.5, 0.7]},
        }  # fmt: skip

    args = argparse.Namespace(
        seeds=[0, 1], steps=10, codebook_size=64, segment_length=8192, mel_loss_weight=0.0, speaker_conditioning=None,
        real_voices=["a", "c"],
    )
    table = speech_conversion.table({"speech": [run(0, 0.2, 0.5), run(1, 0.4, 0.7)]}, args, ["--seeds", "0", "1"], speakers)
    row = next(line for line in table.splitlines() if line.startswith("| speech |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "15.0 ± 7.1"  # CPU minutes: 10 and 20
    assert cells[3] == "60.0 ± 14.1%"  # judged as the target: 50% and 70%
    assert cells[5] == "0.300 ± 0.141"  # WER of reconstructions: 0.2 and 0.4
    assert cells[7] == "3.00 ± 1.41x, 3.00 ± 0.00x"  # over the originals' 0.1 of each seed
    assert cells[8] == "a 0.50 ± 0.00, c 0.70 ± 0.00"
    assert "| b | 20 | 80 | 0 |" in table  # the confusion, rows as decoded, in % of each row
    assert "originals 0.280" in table and "at least 3x chance (100%)" in table
    assert "crops of 8192 samples, mel-loss weight 0.0." in table


def test_speech_conversion_merges_seeds_run_apart(tmp_path, load_benchmark):
    """Seeds run in separate processes, each with its own --output JSON, make one table with
    --merge; runs of other settings, or a seed twice, are refused."""
    speech_conversion = load_benchmark("speech_conversion")
    names = [voice[0] for voice in speech_conversion.SYNTHETIC_SPEAKERS]
    confusion = torch.eye(len(names)).tolist()

    def run(seed, as_target):
        return {
            "seed": seed, "train_cpu_seconds": 60.0, "utterances": 300, "chance": 0.1, "judge_on_originals": 0.99,
            "reconstructions_judged_as_source": 0.5, "conversions_judged_as_target": as_target,
            "conversions_judged_as_source": 0.1, "conversion_confusion": confusion, "wer_utterances": 20,
            "wer_originals": 0.1, "wer_reconstructions": 0.2, "wer_conversions": 0.3,
            "real": {"originals": 0.28, "conversions": [1.0, 1.0]},
        }  # fmt: skip

    settings = ["--steps", "10", "--speaker-conditioning", "every_block"]
    for seed, as_target in ((1, 0.4), (0, 0.2)):
        payload = {"argv": [*settings, "--seeds", str(seed), "--output", f"seed{seed}.md"], "results": {"speech": [run(seed, as_target)]}}
        (tmp_path / f"seed{seed}.json").write_text(json.dumps(payload))
    seeds = [str(tmp_path / f"seed{seed}.json") for seed in (1, 0)]
    results = speech_conversion.main([*settings, "--merge", *seeds, "--output", str(tmp_path / "all.md")])
    assert [r["seed"] for r in results["speech"]] == [0, 1]
    table = (tmp_path / "all.md").read_text()
    assert "| speech | 1.0 ± 0.0 | 50.0 ± 0.0% | 30.0 ± 14.1% |" in table and "seeds 0 1; 10 steps" in table
    assert "speaker conditioning every_block" in table and "--merge" in table.splitlines()[0]
    with pytest.raises(ValueError, match="run with steps=10, this command has 3000"):
        speech_conversion.main(["--speaker-conditioning", "every_block", "--merge", *seeds])
    with pytest.raises(ValueError, match=r"seeds \[1, 1\] appear more than once"):
        speech_conversion.main([*settings, "--merge", seeds[0], seeds[0]])


def test_speech_conversion_trains_with_the_recipes_settings_unless_told(tmp_path, monkeypatch, load_benchmark):
    speech_conversion = load_benchmark("speech_conversion")
    calls = []

    def train(argv):  # records the command line instead of training
        calls.append(argv)
        Path(argv[argv.index("--output_dir") + 1]).mkdir(parents=True)
        return torch.nn.Identity(), {}

    monkeypatch.setattr(speech_conversion.tokenizer_cli, "main", train)
    recipe = speech_conversion.REPO / "recipes" / "speech.yaml"
    for weight, conditioning in ((None, None), (0.0, "every_block")):
        args = argparse.Namespace(work_dir=tmp_path / str(weight), reuse=False, steps=10, segment_length=8192,
                                  codebook_size=64, mel_loss_weight=weight, speaker_conditioning=conditioning)  # fmt: skip
        speech_conversion.train_tokenizer(recipe, 0, args)
    assert "--mel_loss_weight" not in calls[0] and "--model.speaker_conditioning" not in calls[0]  # the recipe's own
    assert calls[1][calls[1].index("--mel_loss_weight") + 1] == "0.0"
    assert calls[1][calls[1].index("--model.speaker_conditioning") + 1] == "every_block"


def test_speech_train_cost_times_each_decoders_steps_side_by_side(tmp_path, load_benchmark):
    speech_train_cost = load_benchmark("speech_train_cost")
    variants = ["conv, spectral loss only", "conv, spectral + mel loss (recipes/speech.yaml)"]
    report = speech_train_cost.main(["--steps", "1", "--rounds", "1", "--variants", *variants, "--output", str(tmp_path / "cost.md")])
    assert [len(report["runs"][name]) for name in variants] == [1, 1]
    assert all(0 < seconds < 60 for name in variants for seconds in report["runs"][name])
    table = (tmp_path / "cost.md").read_text()
    assert "| conv, spectral + mel loss (recipes/speech.yaml) |" in table and "| 1.0x |" in table
    assert json.loads((tmp_path / "cost.json").read_text())["seconds_per_step"] == report["runs"]
    with pytest.raises(ValueError, match="--steps 0"):
        speech_train_cost.main(["--steps", "0"])
