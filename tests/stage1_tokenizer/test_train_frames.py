"""Real training on first-person ViZDoom frames, the paper's DeepMind Lab setting: the frame
tokenizer (84x84x3 -> 21x21 codes) and the latent VQ-VAE over its codes (21x21 -> 3 codes, 27
bits per frame), both through their CLIs; held-out reconstruction improves at both stages, and
the 3 codes tell the maps apart."""

import json
import math
from pathlib import Path

import pytest
import torch

from stage1_tokenizer import LatentVQVAEModel, VQVAEModel, frames_round_trip
from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer import train_latent as latent_cli
from stage1_tokenizer.data import VizDoomFrames
from stage1_tokenizer.code_dataset import load_code_dataset
from stage1_tokenizer.common.visualize import save_image_grid

REPO_RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "vizdoom.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    tokenizer, tokenizer_metrics = tokenizer_cli.main([
        REPO_RECIPE, "--model.hidden_channels", "64", "--max_steps", "200", "--eval_every", "200", "--save_every", "200",
        "--eval_limit", "300", "--output_dir", str(root / "tokenizer"),
    ])  # fmt: skip
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(root / "tokenizer" / "model"), "--dataset", "vizdoom", "--split", split,
                         "--output_dir", str(root / f"codes-{split}")])  # fmt: skip
    latent, latent_metrics = latent_cli.main([
        "--tokenizer", str(root / "tokenizer" / "model"), "--train_codes", str(root / "codes-train"),
        "--eval_codes", str(root / "codes-test"), "--model.hidden_channels", "64", "--max_steps", "300", "--eval_every", "300",
        "--save_every", "300", "--batch_size", "32", "--learning_rate", "0.001", "--output_dir", str(root / "latent"),
    ])  # fmt: skip
    return root, tokenizer.eval(), tokenizer_metrics, latent.eval(), latent_metrics


def test_both_stages_improve_held_out_reconstruction(trained):
    root, tokenizer, tokenizer_metrics, latent, latent_metrics = trained
    test = VizDoomFrames("test")
    frames = torch.stack([test[i]["pixel_values"] for i in range(0, len(test), 10)])  # every map
    torch.manual_seed(0)
    untrained_tokenizer = VQVAEModel(tokenizer.config).eval()
    untrained_latent = LatentVQVAEModel(latent.config).eval()
    with torch.no_grad():
        before = torch.mean((untrained_tokenizer.decode(untrained_tokenizer.encode(frames)) - frames) ** 2).item()
    trip = frames_round_trip(tokenizer, latent, frames)
    untrained_trip = frames_round_trip(tokenizer, untrained_latent, frames)
    after_grid = torch.mean((trip["from_grid"] - frames) ** 2).item()
    after_codes = torch.mean((trip["from_codes"] - frames) ** 2).item()
    before_codes = torch.mean((untrained_trip["from_codes"] - frames) ** 2).item()
    assert after_grid < 0.2 * before, (before, after_grid)  # stage one: 84x84 -> 21x21 codes
    assert after_codes < 0.5 * before_codes, (before_codes, after_codes)  # stage two: -> 3 codes
    assert tokenizer_metrics["mse_from_codes"] < 0.01
    # stage two's own measure: the cross-entropy of the 21x21 codes given the 3, from log K down
    assert latent_metrics["cross_entropy"] < math.log(latent.config.input_codebook_size) - 2.5, latent_metrics
    assert trip["grid_codes"].shape[1:] == (21, 21) and trip["codes"].shape[1:] == (3, 1)
    assert latent.bits_per_frame == 27
    picture = save_image_grid([frames[:12], trip["from_grid"][:12].clamp(0, 1), trip["from_codes"][:12].clamp(0, 1)], root / "round_trip.png")
    assert picture.stat().st_size > 0 and (root / "latent" / "samples" / "round-trip-step-0000300.png").is_file()


@pytest.fixture(scope="module")
def held_out_episodes(trained):
    """Two held-out episodes per map (the default test split has one) and their 21x21 codes."""
    _, tokenizer, _, _, _ = trained
    frames = VizDoomFrames("test", num_frames=6 * 200)
    with torch.no_grad():
        grids = torch.cat([tokenizer.encode(torch.stack([frames[i]["pixel_values"] for i in range(start, start + 200)]))[-1]
                           for start in range(0, len(frames), 200)])  # fmt: skip
    return frames, grids


def test_three_codes_tell_the_maps_apart(trained, held_out_episodes):
    root, tokenizer, _, latent, _ = trained
    _, metadata = load_code_dataset(root / "codes-test", tokenizer)
    assert len(metadata["id2label"]) == 6
    frames, grids = held_out_episodes
    tuples = latent.encode(grids)[0].flatten(1)
    maps, episodes = torch.as_tensor(frames.labels), torch.as_tensor(frames.episodes)
    identical = (tuples[:, None] == tuples[None]).all(-1)
    same_map = maps[:, None] == maps[None]
    other_episode = same_map & (episodes[:, None] != episodes[None])  # not consecutive frames of one walk
    within, across = identical[other_episode].float().mean().item(), identical[~same_map].float().mean().item()
    # with tuples independent of the map the two rates would be equal;
    # benchmarks/frames_evidence.py measures them on trained models (docs/results/frames_evidence.md)
    assert within > 10 * max(across, 1e-3), (within, across)
    with pytest.raises(ValueError, match="trained on the codes of tokenizer"):
        frames_round_trip(VQVAEModel(tokenizer.config).eval(), latent, torch.rand(1, 3, 84, 84))


def test_frames_evidence_benchmark_measures_the_three_codes(trained, held_out_episodes, load_benchmark):
    """benchmarks/frames_evidence.py's analysis on the models trained above (its training is the CLIs')."""
    frames_evidence = load_benchmark("frames_evidence")

    # the classifiers' rule: every nearest train frame votes, a tied vote goes to the lowest map
    train_codes, train_maps = torch.tensor([[0, 0, 0], [0, 0, 1], [5, 5, 5]]), torch.tensor([1, 0, 2])
    assert frames_evidence.hamming_classifier(train_codes, train_maps, torch.tensor([[0, 0, 2], [5, 5, 0]]), 3).tolist() == [0, 2]

    root, tokenizer, _, latent, _ = trained
    frames, grids = held_out_episodes
    train = frames_evidence.split_codes(latent, *frames_evidence.load_grids(root / "codes-train", tokenizer))
    held_out = frames_evidence.split_codes(latent, grids, frames.labels, frames.episodes)
    result = frames_evidence.analyse(latent, train, held_out)

    for key, frames_count in (("held_out_entropy", 1200), ("train_entropy", 6000)):
        entropy = result[key]
        assert entropy["frames"] == frames_count and entropy["max_bits"] == pytest.approx(math.log2(frames_count))
        assert 1.0 < entropy["bits"] <= math.log2(entropy["distinct"]) + 1e-9 and entropy["distinct"] <= frames_count
    assert 0 < result["held_out_tuples_seen_in_train"] <= 1
    for usage in result["position_usage"]:
        assert 0 < usage["used"] <= 1 and 1 <= usage["perplexity"] <= usage["used"] * 512 + 1e-6
    sharing = result["sharing"]
    assert sum(kind["pairs"] for kind in sharing.values()) == 1200 * 1199 // 2
    assert all(0 <= kind["identical"] <= 1 for kind in sharing.values())
    assert sharing["same_map_other_episode"]["identical"] > 5 * max(sharing["different_maps"]["identical"], 1e-3), sharing
    accuracy = result["accuracy"]
    assert accuracy["chance"] == pytest.approx(1 / 6) and accuracy["majority_map"] == pytest.approx(1 / 6)
    # measured on these models: 95% from the 3 codes, 99% from the 21x21 codes; chance is 17%
    assert accuracy["three_codes_hamming"] > 0.6 and accuracy["three_codes_codebook"] > 0.6, accuracy
    assert accuracy["grid_codes_hamming"] > 0.8 and "thumbnails_8x8" not in accuracy, accuracy
    settings = {"command": "python benchmarks/frames_evidence.py", "tokenizer_steps": 200, "latent_steps": 300,
                "hidden_channels": 64, "held_out_episodes": 2, "minutes": 0.1, "threads": 2}  # fmt: skip
    table = frames_evidence.report([{"seed": 0, **result, "minutes": {"training": 0.0, "analysis": 0.1}}], settings)
    headline = f"| Hamming over 3 positions | {100 * accuracy['three_codes_hamming']:.1f} ± 0.0% |"
    assert headline in table and "| held out | 1200 |" in table


def test_a_prior_over_the_three_codes_samples_frames_of_the_asked_map(trained):
    """New frames: a map-conditioned transformer over the 3 codes, decoded through both stages.
    A nearest-mean judge of the held-out frames' maps (8x8 thumbnails) recognises the sampled
    frames' maps far above chance (1 in 6)."""
    import torch.nn.functional as F

    from stage2_prior import train as prior_cli

    root, tokenizer, _, latent, _ = trained
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(root / "latent" / "model"), "--codes", str(root / f"codes-{split}"),
                         "--output_dir", str(root / f"latent-codes-{split}")])  # fmt: skip
    prior, metrics = prior_cli.main([
        "--prior", "transformer", "--model.hidden_size", "64", "--model.num_layers", "2", "--model.num_heads", "4",
        "--tokenizer", str(root / "latent" / "model"), "--train_codes", str(root / "latent-codes-train"),
        "--eval_codes", str(root / "latent-codes-test"), "--max_steps", "150", "--eval_every", "150", "--save_every", "150",
        "--batch_size", "64", "--learning_rate", "0.003", "--output_dir", str(root / "latent-prior"),
    ])  # fmt: skip
    assert prior.config.code_shape == [3, 1] and metrics["nll_nats_per_code"] < math.log(512) - 3, metrics
    test = VizDoomFrames("test")
    frames, maps = torch.stack([test[i]["pixel_values"] for i in range(len(test))]), torch.tensor([int(test[i]["label"]) for i in range(len(test))])
    thumbnails = F.adaptive_avg_pool2d(frames, 8).flatten(1)
    means = torch.stack([thumbnails[maps == m].mean(0) for m in range(6)])
    wanted = torch.arange(6).repeat_interleave(8)
    codes = prior.eval().generate(len(wanted), condition=wanted, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sampled = tokenizer.decode(latent.decode(codes)).clamp(0, 1)  # 3 codes -> 21x21 codes -> frames
    judged = torch.cdist(F.adaptive_avg_pool2d(sampled, 8).flatten(1), means).argmin(1)
    accuracy = (judged == wanted).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance: 1/6
    save_image_grid(list(sampled.view(6, 8, 3, 84, 84)), root / "sampled_frames.png")


def test_a_pixelcnn_prior_over_the_21x21_codes(trained):
    """The other prior of the issue: a map-conditioned PixelCNN over the frame tokenizer's codes,
    through stage two's CLI as it is; its evaluation decodes one row of new frames per map."""
    from stage2_prior import train as prior_cli

    root, _, _, _, _ = trained
    prior, metrics = prior_cli.main([
        "--prior", "pixelcnn", "--model.hidden_channels", "32", "--model.num_layers", "4", "--model.output_channels", "64",
        "--tokenizer", str(root / "tokenizer" / "model"), "--train_codes", str(root / "codes-train"),
        "--eval_codes", str(root / "codes-test"), "--max_steps", "40", "--eval_every", "40", "--save_every", "40",
        "--batch_size", "32", "--learning_rate", "0.002", "--samples_per_class", "2", "--sample_classes", "6",
        "--output_dir", str(root / "grid-prior"),
    ])  # fmt: skip
    assert prior.config.code_shape == [21, 21] and prior.config.num_classes == 6
    assert metrics["nll_nats_per_code"] < math.log(512) - 2, metrics
    assert (root / "grid-prior" / "samples" / "samples-step-0000040.png").is_file()


def test_latent_decoders_benchmark_compares_decoders(trained, tmp_path, capsys, load_benchmark):
    """benchmarks/latent_decoders.py on the trained conv-decoder model and an untrained PixelCNN one."""
    import copy
    import sys

    latent_decoders = load_benchmark("latent_decoders")

    root, tokenizer, _, latent, _ = trained
    config = copy.deepcopy(latent.config)
    config.decoder, config.pixelcnn_layers, config.pixelcnn_channels = "pixelcnn", 2, 16
    torch.manual_seed(0)
    LatentVQVAEModel(config).save_pretrained(tmp_path / "pixelcnn")
    rows = latent_decoders.main([
        "--tokenizer", str(root / "tokenizer" / "model"), "--models", str(root / "latent" / "model"), str(tmp_path / "pixelcnn"),
        "--frames", "12", "--temperatures", "1.0", "--picture", str(tmp_path / "decoders.png"), "--output", str(tmp_path / "decoders.md"),
    ])  # fmt: skip
    trained_row, untrained_row = rows
    assert (trained_row["decoder"], untrained_row["decoder"]) == ("conv", "pixelcnn")
    assert trained_row["nll_nats_per_code"] < untrained_row["nll_nats_per_code"] - 1.0
    assert trained_row["bits_per_frame"] == pytest.approx(trained_row["nll_nats_per_code"] * 441 / math.log(2))
    assert trained_row["codes_exact"] > untrained_row["codes_exact"]
    assert trained_row["mse_from_3_codes"] < untrained_row["mse_from_3_codes"]
    assert trained_row["mse_from_grid"] == untrained_row["mse_from_grid"] < trained_row["mse_from_3_codes"]
    assert "| pixelcnn | 1 |" in capsys.readouterr().out and (tmp_path / "decoders.png").stat().st_size > 0
    table = (tmp_path / "decoders.md").read_text()
    assert table.startswith("Command: `python benchmarks/latent_decoders.py --tokenizer") and "| pixelcnn | 1 |" in table
    assert json.loads((tmp_path / "decoders.json").read_text())["rows"] == rows
