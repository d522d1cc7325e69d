"""The one training loop of both stages, on Accelerate: one or many processes, mixed precision,
gradient accumulation, a tqdm bar, TensorBoard logs, atomic checkpoints and exact resume.

Stage one (`stage1_tokenizer.train`) and stage two (`stage2_prior.train`) differ in the model, the
data and the `compute_loss` / `evaluate` callbacks they pass, never in loop code.

Checkpoints: `OUTPUT_DIR/checkpoints/step-0000500/` holds Accelerate's state (model as
safetensors, optimizer, RNG states, data position), `model/` (a `save_pretrained` folder) and
`trainer_state.json`. Each is written under a temporary name and renamed when complete, so a run
killed mid-write never leaves a directory that looks like a checkpoint. `--resume_from_checkpoint
latest` continues from the newest complete one, at the same step and data position.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import HfArgumentParser

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{7})$")
EVAL_RESULTS = "eval_results.json"  # in OUTPUT_DIR/model: the final evaluation


@dataclass
class TrainingConfig:
    output_dir: str = field(default="runs/vqvae", metadata={"help": "Where logs, checkpoints and the final model go."})
    max_steps: int = field(default=2000, metadata={"help": "Optimizer steps in total (after accumulation)."})
    batch_size: int = field(default=64, metadata={"help": "Examples per process per micro-batch."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Clip gradients to this norm; 0 disables."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' or 'bf16'."})
    log_every: int = field(default=50, metadata={"help": "Steps between TensorBoard scalars."})
    eval_every: int = field(default=500, metadata={"help": "Steps between evaluations (and at the end); 0 disables."})
    save_every: int = field(default=500, metadata={"help": "Steps between checkpoints (and at the end)."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Newest checkpoints kept on disk."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint directory, or 'latest' for the newest in output_dir."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the model init, the data order and sampling."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})

    def __post_init__(self):
        checks = {
            "max_steps": self.max_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "gradient_accumulation_steps": self.gradient_accumulation_steps >= 1,
            "save_every": self.save_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1,
            "log_every": self.log_every >= 1,
            "eval_every": self.eval_every >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"--{name} got {getattr(self, name)!r}: it must be positive.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")


def parse_recipe_args(dataclass_types, argv=None) -> tuple:
    """The one config system of both stages' CLIs: flags, or a YAML/JSON recipe followed by flags
    that override it, parsed by `HfArgumentParser` into the given dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        recipe = Path(argv.pop(0))
        if not recipe.is_file():
            raise FileNotFoundError(f"recipe {recipe} not found; recipes ship in recipes/.")
        values = yaml.safe_load(recipe.read_text()) or {}
        argv = [item for key, value in values.items() if value is not None for item in (f"--{key}", str(value))] + argv
    return HfArgumentParser(dataclass_types).parse_args_into_dataclasses(argv)


def publish_directory(tmp: Path, final: Path) -> Path:
    """Moves a completely written `tmp` directory to `final`, replacing what was there. The rename
    is the commit point: a run killed before it leaves only `tmp`, never a half-written `final`."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary, half-written directories are not listed)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def resolve_checkpoint(config: TrainingConfig) -> Path | None:
    if config.resume_from_checkpoint is None:
        return None
    if config.resume_from_checkpoint == "latest":
        found = list_checkpoints(config.output_dir)
        return found[-1] if found else None  # nothing saved yet: start from scratch
    path = Path(config.resume_from_checkpoint)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {path} is not a complete checkpoint (no trainer_state.json); "
            f"complete ones: {[str(p) for p in list_checkpoints(config.output_dir)] or 'none'}, or pass 'latest'."
        )
    return path


def train(
    model: torch.nn.Module,
    train_dataset: Dataset,
    config: TrainingConfig,
    compute_loss: Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict]],
    evaluate: Callable[[torch.nn.Module, Accelerator, int], dict] | None = None,
    collate_fn: Callable | None = None,
    run_config: dict | None = None,
) -> dict:
    """Trains `model` for `config.max_steps` optimizer steps and returns the last evaluation.

    compute_loss(model, batch) -> (loss, {name: scalar}) is called on every micro-batch;
    evaluate(model, accelerator, step) -> {name: float} runs on every process (so it may gather)
    every `eval_every` steps and at the end; its scalars go to TensorBoard.
    The final model is written with `save_pretrained` to OUTPUT_DIR/model, its last evaluation
    beside it as eval_results.json.
    """
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # a seeded sampler makes the data order a function of (seed, epoch): resume replays it
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(config.seed)
    loader = DataLoader(
        train_dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        collate_fn=collate_fn,
    )
    if len(loader) == 0:
        raise ValueError(
            f"the training set has {len(train_dataset)} examples, fewer than one batch of "
            f"{config.batch_size} per process: lower --batch_size."
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    step = 0
    resume_from = resolve_checkpoint(config)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        step = json.loads((resume_from / "trainer_state.json").read_text())["step"]
        accelerator.print(f"resumed from {resume_from} at step {step}")
    accelerator.init_trackers("train", config={k: str(v) for k, v in {**asdict(config), **(run_config or {})}.items()})

    micro_batches_per_epoch = len(loader)
    steps_per_epoch = max(1, micro_batches_per_epoch // config.gradient_accumulation_steps)
    bar = tqdm(
        total=config.max_steps, initial=step, desc="train", disable=not accelerator.is_local_main_process, dynamic_ncols=True
    )
    last_eval: dict = {}
    running: dict[str, float] = {}
    first_step, seconds_in_steps = step, 0.0  # wall time of training steps (not eval or saving)
    model.train()
    while step < config.max_steps:
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        loader.set_epoch(epoch)
        skip = done_in_epoch * config.gradient_accumulation_steps
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        started = time.perf_counter()
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                loss, metrics = compute_loss(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            seconds_in_steps += time.perf_counter() - started
            step += 1
            bar.update(1)
            for name, value in {"loss": loss.detach(), **metrics}.items():
                running[name] = running.get(name, 0.0) + float(value)
            if step % config.log_every == 0 or step == config.max_steps:
                count = config.log_every if step % config.log_every == 0 else step % config.log_every
                averages = {f"train/{k}": v / count for k, v in running.items()}
                accelerator.log(averages, step=step)
                bar.set_postfix({k.split("/")[1]: f"{v:.4g}" for k, v in averages.items()})
                running = {}
            finished = step == config.max_steps
            if evaluate is not None and ((config.eval_every and step % config.eval_every == 0) or finished):
                model.eval()
                last_eval = evaluate(model, accelerator, step)
                model.train()
                accelerator.log({f"eval/{k}": v for k, v in last_eval.items()}, step=step)
                if accelerator.is_local_main_process:  # under the bar, not glued to it
                    bar.write(f"step {step}: " + ", ".join(f"{k} {v:.5g}" for k, v in last_eval.items()))
            if step % config.save_every == 0 or finished:
                save_checkpoint(accelerator, model, output_dir, step, config.keep_checkpoints, last_eval)
            if finished:
                break
            started = time.perf_counter()
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        examples = (step - first_step) * config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
        summary = {
            "steps": step - first_step,
            "seconds_in_steps": seconds_in_steps,
            "examples_per_second": examples / max(seconds_in_steps, 1e-9),
            "num_processes": accelerator.num_processes,
            "peak_rss_mb_main_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        final = output_dir / "model"
        tmp = output_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp)
        # the last evaluation travels with the model (bundles and model cards read it)
        (tmp / EVAL_RESULTS).write_text(json.dumps({"step": step, **{k: float(v) for k, v in last_eval.items()}}, indent=2))
        publish_directory(tmp, final)
    accelerator.end_training()
    return last_eval


def save_checkpoint(
    accelerator: Accelerator, model, output_dir: Path, step: int, keep: int, metrics: dict | None = None
) -> Path:
    """Writes checkpoints/step-NNNNNNN atomically: everything goes to a temporary directory that is
    renamed only once complete, then older checkpoints beyond `keep` are removed."""
    root = checkpoint_dir(output_dir)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its RNG state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(tmp / "model")
        state = {"step": step, "metrics": {k: float(v) for k, v in (metrics or {}).items()}}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        publish_directory(tmp, final)  # re-saving the same step (a resumed run) replaces it whole
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final

