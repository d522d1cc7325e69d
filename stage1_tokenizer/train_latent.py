"""Train a latent VQ-VAE on a frame tokenizer's codes: the paper's second VQ-VAE, 21x21 codes -> 3.

    python -m stage1_tokenizer.encode --tokenizer runs/vizdoom/model --dataset vizdoom --split train --output_dir codes/vizdoom-train
    python -m stage1_tokenizer.encode --tokenizer runs/vizdoom/model --dataset vizdoom --split test --output_dir codes/vizdoom-test
    accelerate launch -m stage1_tokenizer.train_latent recipes/vizdoom_latent.yaml

The loop is the shared one (`stage1_tokenizer.common.training`), the config system the shared
recipes + flags one: the model's fields are `LatentVQVAEConfig`'s (`--model.NAME`). Codes made by
another tokenizer than `--tokenizer` are refused. Evaluation reports the held-out cross-entropy
of the input codes (nats per code), the share of input codes that decode(encode(codes)) gets
right, codebook usage, and writes samples/round-trip-step-N.png: held-out frames decoded from
their 21x21 codes, over the same frames decoded from their 3 codes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .code_dataset import CodeDataset, load_code_dataset, tokenizer_fingerprint
from .common.recipes import parse_command
from .common.training import TrainingConfig, eval_loader, prepare_output_dir, train
from .common.visualize import plot_codebook_usage, save_image_grid
from .configuration_latent_vqvae import LatentVQVAEConfig
from .modeling_latent_vqvae import LatentVQVAEModel
from .modeling_vqvae import VQVAEModel
from .quantizers import CodebookUsage, options_for_run

DERIVED_FIELDS = ("input_codebook_size", "input_grid", "input_fingerprint")  # read from the codes


@dataclass
class LatentDataArguments:
    tokenizer: str | None = field(default=None, metadata={"help": "The frame tokenizer's model folder (required)."})
    train_codes: str | None = field(default=None, metadata={"help": "Its code dataset to train on (stage1_tokenizer.encode)."})
    eval_codes: str | None = field(default=None, metadata={"help": "Held-out code dataset (same tokenizer)."})
    eval_limit: int | None = field(default=2000, metadata={"help": "Evaluate on the first N held-out examples."})
    num_examples: int = field(default=12, metadata={"help": "Frames in each round-trip PNG."})


def compute_loss(model, batch):
    output = model(batch["codes"])
    return output.loss, {
        "cross_entropy": output.reconstruction_loss.detach(),
        "quantizer_loss": output.quantizer_loss.detach(),
        "perplexity": output.perplexity[0].detach(),
    }


def make_evaluate(eval_dataset: CodeDataset, tokenizer: VQVAEModel, args: LatentDataArguments, output_dir: Path):
    def evaluate(model, accelerator, step):
        latent = accelerator.unwrap_model(model)
        usage = CodebookUsage(latent.config.codebook_size, sum_over_processes=False)
        cross_entropy, right = [], []
        with torch.no_grad():
            for batch in eval_loader(accelerator, eval_dataset, 256):
                codes = batch["codes"]
                output = latent(codes)
                losses = torch.nn.functional.cross_entropy(output.logits.movedim(-1, 1).float(), codes, reduction="none")
                cross_entropy.append(accelerator.gather_for_metrics(losses.flatten(1).sum(1, dtype=torch.float64)))
                right.append(accelerator.gather_for_metrics((latent.decode(output.codes) == codes).flatten(1).sum(1)))
                usage.update(accelerator.gather_for_metrics(output.codes[0]))
        count = len(eval_dataset) * eval_dataset[0]["codes"].numel()
        metrics = {"cross_entropy": torch.cat(cross_entropy).sum().item() / count, "code_accuracy": torch.cat(right).sum().item() / count}
        metrics["codebook_used"], metrics["perplexity"], counts = usage.summarize()
        if accelerator.is_main_process:
            spread = torch.linspace(0, len(eval_dataset) - 1, min(args.num_examples, len(eval_dataset))).long()
            grids = torch.stack([eval_dataset[int(i)]["codes"] for i in spread]).to(accelerator.device)  # across the split
            decoder = tokenizer.to(accelerator.device)
            with torch.no_grad():
                from_grid = decoder.decode(grids).clamp(0, 1).cpu()
                from_codes = decoder.decode(latent.decode(latent.encode(grids))).clamp(0, 1).cpu()
            save_image_grid([from_grid, from_codes], output_dir / "samples" / f"round-trip-step-{step:07d}.png")
            plot_codebook_usage({latent.config.quantizer: counts}, output_dir / "codebook_usage.png")
        return metrics

    return evaluate


def main(argv=None) -> tuple[LatentVQVAEModel, dict]:
    model_fields, data_args, training = parse_command(
        argv, (LatentDataArguments, TrainingConfig), LatentVQVAEConfig, derived=DERIVED_FIELDS, description=__doc__
    )
    if data_args.tokenizer is None or data_args.train_codes is None:
        raise ValueError("pass --tokenizer (the frame tokenizer's folder) and --train_codes (its code dataset).")
    model_fields["quantizer_options"] = options_for_run(
        model_fields.get("quantizer", "vq-ema"), model_fields.get("quantizer_options", {}), training.max_steps
    )
    LatentVQVAEConfig(**model_fields)  # bad model settings fail here, before any data is read
    prepare_output_dir(training)
    tokenizer = VQVAEModel.from_pretrained(data_args.tokenizer).eval()
    train_codes, metadata = load_code_dataset(data_args.train_codes, tokenizer)
    config = LatentVQVAEConfig(
        **model_fields,
        input_codebook_size=metadata["codebook_size"],
        input_grid=list(metadata["code_grids"][-1]),
        input_fingerprint=tokenizer_fingerprint(tokenizer),
    )
    torch.manual_seed(training.seed)
    model = LatentVQVAEModel(config)
    bottom = metadata["num_levels"] - 1
    evaluate = None
    if data_args.eval_codes is not None:
        eval_codes, _ = load_code_dataset(data_args.eval_codes, tokenizer)
        eval_dataset = CodeDataset(eval_codes, bottom, conditional=False, limit=data_args.eval_limit)
        evaluate = make_evaluate(eval_dataset, tokenizer, data_args, Path(training.output_dir))
    metrics = train(
        model,
        CodeDataset(train_codes, bottom, conditional=False),
        training,
        compute_loss=compute_loss,
        evaluate=evaluate,
        run_config={**{f"model.{k}": v for k, v in model_fields.items()}, **asdict(data_args)},
    )
    return model, metrics


if __name__ == "__main__":
    main()
