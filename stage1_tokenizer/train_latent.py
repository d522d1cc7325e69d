"""Train a latent VQ-VAE on a frame tokenizer's codes: the paper's second VQ-VAE, 21x21 codes -> 3.

    python -m stage1_tokenizer.encode --tokenizer runs/vizdoom/model --dataset vizdoom --split train --output_dir codes/vizdoom-train
    python -m stage1_tokenizer.encode --tokenizer runs/vizdoom/model --dataset vizdoom --split test --output_dir codes/vizdoom-test
    accelerate launch -m stage1_tokenizer.train_latent recipes/vizdoom_latent.yaml

The loop is the shared one (`stage1_tokenizer.training.train`), the config system the shared YAML +
flags one. Codes made by another tokenizer than `--tokenizer` are refused. Evaluation reports
the held-out cross-entropy of the input codes (nats per code), the share of input codes that
decode(encode(codes)) gets right, codebook usage, and writes samples/round-trip-step-N.png: held-out
frames decoded from their 21x21 codes, over the same frames decoded from their 3 codes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .encode import load_code_dataset, tokenizer_fingerprint
from .modeling_latent_vqvae import LATENT_DECODERS, LatentVQVAEConfig, LatentVQVAEModel
from .modeling_vqvae import VQVAEModel
from .quantizers import QUANTIZERS, CodebookUsage
from .train import summarize_usage
from .training import TrainingConfig, parse_recipe_args, train
from .visualize import plot_codebook_usage, save_image_grid


@dataclass
class LatentModelArguments:
    """The fields of `LatentVQVAEConfig` that are not read from the codes (defaults documented there)."""

    code_grid: str = field(default="3,1", metadata={"help": "h,w of this model's codes (the paper's 3 codes: 3,1)."})
    codebook_size: int = 512
    code_dim: int = 64
    hidden_channels: int = 128
    num_downsamples: int = 3
    num_res_blocks: int = 2
    quantizer: str = field(default="vq-ema", metadata={"help": f"One of {', '.join(QUANTIZERS)}."})
    quantizer_options: str = field(default="{}", metadata={"help": "JSON of the quantizer's options."})
    decoder: str = field(default="conv", metadata={"help": f"One of {', '.join(LATENT_DECODERS)}."})
    pixelcnn_layers: int = 8
    pixelcnn_channels: int = 64


@dataclass
class LatentDataArguments:
    tokenizer: str = field(default=None, metadata={"help": "The frame tokenizer's save_pretrained folder (required)."})
    train_codes: str = field(default=None, metadata={"help": "Its code dataset to train on (stage1_tokenizer.encode)."})
    eval_codes: str | None = field(default=None, metadata={"help": "Held-out code dataset (same tokenizer)."})
    eval_limit: int | None = field(default=2000, metadata={"help": "Evaluate on the first N held-out examples."})
    num_examples: int = field(default=12, metadata={"help": "Frames in each round-trip PNG."})


class GridCodes(torch.utils.data.Dataset):
    """The bottom level's code grids of a code dataset: items {"codes": (h, w), "label"}."""

    def __init__(self, codes, num_levels: int, limit: int | None = None):
        if limit is not None:
            codes = codes.select(range(min(limit, len(codes))))
        table = codes.with_format("torch")[:]
        self.codes = table[f"codes_{num_levels - 1}"].long()
        self.labels = table["label"].long() if "label" in table else torch.full((len(self.codes),), -1)

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, i):
        return {"codes": self.codes[i], "label": self.labels[i]}


def compute_loss(model, batch):
    output = model(batch["codes"])
    return output.loss, {
        "cross_entropy": output.reconstruction_loss.detach(),
        "quantizer_loss": output.quantizer_loss.detach(),
        "perplexity": output.perplexity[0].detach(),
    }


def make_evaluate(eval_dataset: GridCodes, tokenizer: VQVAEModel, args: LatentDataArguments, output_dir: Path):
    def evaluate(model, accelerator, step):
        latent = accelerator.unwrap_model(model)
        shard = range(accelerator.process_index, len(eval_dataset), accelerator.num_processes)
        usage = CodebookUsage(latent.config.codebook_size)
        totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # cross-entropy, codes right
        with torch.no_grad():
            for start in range(0, len(shard), 256):
                codes = eval_dataset.codes[list(shard[start : start + 256])].to(accelerator.device)
                output = latent(codes)
                usage.update(output.codes[0])
                totals[0] += output.reconstruction_loss.double() * codes.numel()
                totals[1] += (latent.decode(output.codes) == codes).sum()
        totals = accelerator.reduce(totals, reduction="sum")
        count = len(eval_dataset) * eval_dataset.codes[0].numel()
        metrics = {"cross_entropy": totals[0].item() / count, "code_accuracy": totals[1].item() / count}
        counts = summarize_usage([usage], latent.config, metrics)
        if accelerator.is_main_process:
            spread = torch.linspace(0, len(eval_dataset) - 1, min(args.num_examples, len(eval_dataset))).long()
            grids = eval_dataset.codes[spread].to(accelerator.device)  # across the split (its maps, its episodes)
            decoder = tokenizer.to(accelerator.device)
            with torch.no_grad():
                from_grid = decoder.decode(grids).clamp(0, 1).cpu()
                from_codes = decoder.decode(latent.decode(latent.encode(grids))).clamp(0, 1).cpu()
            save_image_grid([from_grid, from_codes], output_dir / "samples" / f"round-trip-step-{step:07d}.png")
            plot_codebook_usage(counts, output_dir / "codebook_usage.png")
        return metrics

    return evaluate


def main(argv=None) -> tuple[LatentVQVAEModel, dict]:
    model_args, data_args, training = parse_recipe_args((LatentModelArguments, LatentDataArguments, TrainingConfig), argv)
    if data_args.tokenizer is None or data_args.train_codes is None:
        raise ValueError("pass --tokenizer (the frame tokenizer's folder) and --train_codes (its code dataset).")
    try:
        code_grid = [int(side) for side in model_args.code_grid.split(",")]
        options = json.loads(model_args.quantizer_options)
    except ValueError as error:
        raise ValueError(f"--code_grid must be h,w (e.g. 3,1) and --quantizer_options JSON: {error}") from None
    tokenizer = VQVAEModel.from_pretrained(data_args.tokenizer).eval()
    train_codes, metadata = load_code_dataset(data_args.train_codes, tokenizer)
    fields = {**asdict(model_args), "code_grid": code_grid, "quantizer_options": options}
    config = LatentVQVAEConfig(
        **fields,
        input_codebook_size=metadata["codebook_size"],
        input_grid=metadata["code_grids"][-1],
        input_fingerprint=tokenizer_fingerprint(tokenizer),
    )
    torch.manual_seed(training.seed)
    model = LatentVQVAEModel(config)
    evaluate = None
    if data_args.eval_codes is not None:
        eval_codes, _ = load_code_dataset(data_args.eval_codes, tokenizer)
        eval_dataset = GridCodes(eval_codes, metadata["num_levels"], data_args.eval_limit)
        evaluate = make_evaluate(eval_dataset, tokenizer, data_args, Path(training.output_dir))
    metrics = train(
        model,
        GridCodes(train_codes, metadata["num_levels"]),
        training,
        compute_loss=compute_loss,
        evaluate=evaluate,
        run_config={**asdict(model_args), **asdict(data_args)},
    )
    return model, metrics


if __name__ == "__main__":
    main()
