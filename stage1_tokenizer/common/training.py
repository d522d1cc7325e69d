"""The one training loop of both stages, on Accelerate: one or many processes, mixed precision,
gradient accumulation, a tqdm bar, TensorBoard logs, atomic checkpoints and exact resume.

Stage one (`stage1_tokenizer.train`, `train_latent`) and stage two (`stage2_prior.train`) differ
in the model, the data and the `compute_loss` / `evaluate` callbacks they pass, never in loop code.
An optional `Adversary` (a GAN's discriminator, its losses and its own optimizer) is trained in the
same loop, step for step against the model (the speech tokenizer's conv decoder, HiFi-GAN style).
Evaluation callbacks read their held-out data through `eval_loader` + `gather_for_metrics`, so
every process scores its share and every metric sees each example once, in order.

Checkpoints: `OUTPUT_DIR/checkpoints/step-0000500/` holds Accelerate's state (model as
safetensors, optimizer, RNG states, data position; with an adversary its discriminator and its
optimizer too, `model_1.safetensors` and `optimizer_1.bin`), `model/` (a `save_pretrained` folder
of the model alone) and `trainer_state.json`. Each is written under a temporary name and renamed
when complete, so a run killed mid-write never leaves a directory that looks like a checkpoint. `--resume_from_checkpoint
latest` continues from the newest checkpoint that loads (an unreadable one is skipped, with a
warning), at the same step and data position.

Exact resume: the data order is a function of (seed, epoch) (Accelerate's seedable sampler), the
loader draws from its own generator, never from the global torch RNG the model's own noise uses
(GM-VQ's Gumbel noise), and datasets with random crops draw them from (seed, epoch, index)
(`set_epoch`), so a resumed run, stopped anywhere, continues as the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from .files import RUN_MARKER, TRAINER_STATE, check_output_dir, is_vqgen_output, publish_directory, write_text_atomic
from .recipes import config_values

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{7})$")
EVAL_RESULTS = "eval_results.json"  # in OUTPUT_DIR/model: the final evaluation
SKIPPED = "bad_files_skipped"  # a batch field some datasets add (data/media.py): unusable files skipped
ADVERSARY = "adversary"  # in trainer_state.json: the settings of the run's discriminator, or none


def process_position() -> tuple[int, int]:
    """(this process's rank, the number of processes) of the current `accelerate launch` (torchrun's
    environment), known before any Accelerator exists: what splitting a stream by node needs."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class TrainingConfig:
    output_dir: str = field(default="runs/vqvae", metadata={"help": "Where logs, checkpoints and the final model go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start a new run in an --output_dir that holds another run or other files."}
    )
    max_steps: int = field(default=2000, metadata={"help": "Optimizer steps in total (after accumulation)."})
    batch_size: int = field(default=64, metadata={"help": "Examples per process per micro-batch."})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (>= 0)."})
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
    num_workers: int | None = field(
        default=None,
        metadata={"help": "DataLoader worker processes per process (default: the usable cores / processes for data decoded from files, 0 for data held in memory)."},
    )

    def __post_init__(self):
        at_least = {
            "max_steps": 1, "batch_size": 1, "gradient_accumulation_steps": 1, "save_every": 1, "keep_checkpoints": 1,
            "log_every": 1, "eval_every": 0,
        }  # fmt: skip
        for name, low in at_least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"--{name} got {value!r}: it must be an integer >= {low}.")
        for name, positive in (("learning_rate", True), ("weight_decay", False), ("max_grad_norm", False)):
            value = getattr(self, name)
            if not (value > 0 if positive else value >= 0) or not math.isfinite(value):  # NaN fails both
                raise ValueError(f"--{name} got {value!r}: it must be a finite number {'> 0' if positive else '>= 0'}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"--num_workers got {self.num_workers}: it must be >= 0.")


LossFunction = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


@dataclass
class Adversary:
    """A network trained against the model in the same loop: a GAN's discriminator.

    It gets its own AdamW optimizer (`learning_rate`, the run's weight decay and gradient
    clipping), is prepared by the same Accelerator (DDP, mixed precision, accumulation) and saved
    in every checkpoint, never in OUTPUT_DIR/model. From `start_step` on, each micro-batch, once
    `compute_loss` has returned the real and generated batches: the discriminator's loss
    `discriminator_loss(discriminator, real, generated.detach())` takes its update, then
    `generator_loss(discriminator, real, generated)`, against the updated discriminator
    (HiFi-GAN's order) and without gradients for it, joins the model's loss. With accumulation
    the discriminator updates at the step's last micro-batch, so the generator terms of the
    earlier ones see it before that update. `settings` (what builds the discriminator) go into
    trainer_state.json: resuming with other ones is refused.
    """

    discriminator: torch.nn.Module
    discriminator_loss: LossFunction
    generator_loss: LossFunction
    learning_rate: float
    start_step: int = 0
    settings: dict = field(default_factory=dict)


def check_adversarial_training(config: TrainingConfig, start_step: int) -> None:
    """ValueError, naming the flag, for runs an adversary cannot train in (checked before any work)."""
    if isinstance(start_step, bool) or not isinstance(start_step, int) or not 0 <= start_step < config.max_steps:
        raise ValueError(
            f"--adversarial_start_step got {start_step!r}: it must be an integer in [0, --max_steps {config.max_steps}), "
            "or the discriminator never trains."
        )
    if config.mixed_precision == "fp16" and config.gradient_accumulation_steps > 1:
        raise ValueError(
            f"--mixed_precision fp16 with --gradient_accumulation_steps {config.gradient_accumulation_steps} cannot train an "
            "adversary: the discriminator's update moves fp16's one loss scale between the model's micro-batches. "
            "Use --mixed_precision bf16 or no, or --gradient_accumulation_steps 1."
        )


@contextmanager
def frozen(module: torch.nn.Module):
    """No gradients for `module`'s parameters in what is computed inside (gradients still flow
    through it to its inputs)."""
    wanted = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for parameter, flag in wanted:
            parameter.requires_grad_(flag)


# -- the output folder and its checkpoints ------------------------------------------------------------
def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary, half-written directories are not listed)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def prepare_output_dir(config: TrainingConfig) -> Path:
    """Checks, before any work, that the run may write to `output_dir`: a new or empty folder, a
    run to resume, or (with --overwrite_output_dir) an earlier run of ours, whose checkpoints and
    model are then removed so that none of them mixes with the new run's."""
    output_dir = Path(config.output_dir)
    resuming = config.resume_from_checkpoint is not None
    check_output_dir(output_dir, config.overwrite_output_dir)
    earlier_run = output_dir.is_dir() and any(output_dir.iterdir()) and is_vqgen_output(output_dir)
    if earlier_run and not resuming:
        if not config.overwrite_output_dir:
            raise FileExistsError(
                f"{output_dir} holds an earlier training run: pass --resume_from_checkpoint latest to continue it, "
                "--overwrite_output_dir to start again there, or another --output_dir."
            )
        for ours in (checkpoint_dir(output_dir), output_dir / "model"):
            if ours.is_dir() and (ours.name == "checkpoints" or is_vqgen_output(ours)):
                shutil.rmtree(ours)
    resolve_checkpoints(config)  # a checkpoint named that is not one fails now too
    return output_dir


def resolve_checkpoints(config: TrainingConfig) -> list[Path]:
    """The checkpoints to try resuming from, best first: the one named, or with 'latest' every
    complete one, newest first (an unreadable newest falls back to the one before)."""
    if config.resume_from_checkpoint is None:
        return []
    if config.resume_from_checkpoint == "latest":
        return list_checkpoints(config.output_dir)[::-1]  # none saved yet: start from scratch
    path = Path(config.resume_from_checkpoint)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {path} is not a complete checkpoint (no {TRAINER_STATE}); "
            f"complete ones: {[str(p) for p in list_checkpoints(config.output_dir)] or 'none'}, or pass 'latest'."
        )
    return [path]


def check_same_model(model, checkpoint: Path) -> None:
    """Refuses to resume a checkpoint of a model configured otherwise (another codebook size...).
    The quantizer's options may change between sessions (GM-VQ anneals over --max_steps, which a
    longer resumed run raises)."""
    try:
        saved = json.loads((checkpoint / "model" / "config.json").read_text())
    except (OSError, ValueError):
        return  # no readable config beside the state: load_state reports what is wrong
    differing = {k: (saved.get(k), v) for k, v in config_values(model.config).items() if k != "quantizer_options" and k in saved and saved[k] != json.loads(json.dumps(v, default=str))}
    if differing:
        details = ", ".join(f"{k} {old!r} (this run: {new!r})" for k, (old, new) in differing.items())
        raise ValueError(
            f"checkpoint {checkpoint} is of a model with {details}: resume with the settings it was trained with, "
            "or start a new run in another --output_dir."
        )


def check_same_adversary(adversary: Adversary | None, checkpoint: Path) -> None:
    """Refuses to resume a checkpoint trained with another adversary, or with none, or without
    the one this run has: its state would not load."""
    try:
        saved = json.loads((checkpoint / TRAINER_STATE).read_text()).get(ADVERSARY)
    except (OSError, ValueError):
        return  # load_state reports what is wrong
    wanted = None if adversary is None else json.loads(json.dumps(adversary.settings))
    if saved != wanted:
        def describe(settings):
            return f"a discriminator {settings}" if settings is not None else "no discriminator"

        raise ValueError(
            f"checkpoint {checkpoint} was trained with {describe(saved)}, this run has {describe(wanted)}: resume with the "
            "settings it was trained with, or start a new run in another --output_dir (--adversarial_start_step trains "
            "without the discriminator first within one run)."
        )


def _load_checkpoint(accelerator: Accelerator, model, candidates: list[Path], adversary: Adversary | None = None) -> tuple[int, dict]:
    """(step, trainer state) of the first candidate that loads whole; (0, {}) for none."""
    if candidates:
        check_same_model(accelerator.unwrap_model(model), candidates[0])
        check_same_adversary(adversary, candidates[0])
    for path in candidates:
        try:
            state = json.loads((path / TRAINER_STATE).read_text())
            accelerator.load_state(str(path))
        except Exception as error:  # a truncated or corrupt file: say which, try the one before
            message = f"checkpoint {path} could not be loaded ({type(error).__name__}: {error or 'unexpected end of file'})"
            if path == candidates[-1]:
                raise RuntimeError(f"{message}; no older checkpoint to fall back to. Remove it, or start without --resume_from_checkpoint.") from error
            logger.warning("%s; falling back to the one before.", message)
            accelerator.print(f"warning: {message}; falling back to the one before.")
            continue
        accelerator.print(f"resumed from {path} at step {state['step']}")
        return state["step"], {**state, "path": str(path)}
    return 0, {}


def save_checkpoint(
    accelerator: Accelerator, model, output_dir: Path, step: int, keep: int, state: dict, data_state: dict | None = None
) -> Path:
    """Writes checkpoints/step-NNNNNNN atomically: everything goes to a temporary directory that is
    renamed only once complete, then older checkpoints beyond `keep` are removed. `data_state`:
    this process's position in a streamed dataset (each process writes its own)."""
    root = checkpoint_dir(output_dir)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"  # one name for every process: each writes its RNG state here
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if data_state is not None:
        (tmp / f"data-rank-{accelerator.process_index}.json").write_text(json.dumps(data_state))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(tmp / "model")
        (tmp / TRAINER_STATE).write_text(json.dumps({"step": step, **state}, indent=2))  # written last: the mark of completeness
        publish_directory(tmp, final, overwrite=True)  # re-saving the same step (a resumed run) replaces it whole
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# -- data ----------------------------------------------------------------------------------------------
def _each_dataset(dataset) -> Iterator:
    """`dataset` and the datasets it wraps (Subset, crops, ...)."""
    while dataset is not None:
        yield dataset
        dataset = getattr(dataset, "dataset", None)


def set_epoch(dataset, epoch: int) -> None:
    """Tells every dataset under `dataset` that has `set_epoch` (random crops) the epoch."""
    for part in _each_dataset(dataset):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


def default_num_workers(dataset, num_processes: int = 1) -> int:
    """Worker processes per process for `dataset`: the usable cores shared between the processes
    when items are decoded from files (`decodes_files`), none for data held in memory (workers
    would only add inter-process copies)."""
    if not any(getattr(part, "decodes_files", False) for part in _each_dataset(dataset)):
        return 0
    return max(1, usable_cores() // max(1, num_processes))


def eval_loader(accelerator: Accelerator, dataset: Dataset, batch_size: int, collate_fn: Callable | None = None) -> DataLoader:
    """A DataLoader over `dataset` in order, sharded over the processes. Pass each batch's
    per-example outputs through `accelerator.gather_for_metrics`: every process then sees every
    example once, in the dataset's order, so metrics are the same with 1 process or many."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    return prepare_data_loader(
        loader, accelerator.device, num_processes=accelerator.num_processes, process_index=accelerator.process_index
    )


def drop_bookkeeping(batch: dict) -> dict:
    """The batch without the fields only the loop reads (the count of unusable files skipped)."""
    return {k: v for k, v in batch.items() if k != SKIPPED} if isinstance(batch, dict) else batch


# -- the loop ----------------------------------------------------------------------------------------
def _adversarial_terms(
    accelerator: Accelerator, adversary: Adversary, discriminator, optimizer, real, generated, max_grad_norm: float
) -> tuple[torch.Tensor, dict]:
    """Updates the discriminator on the generated batch detached, then returns the generator's
    adversarial loss against the updated discriminator, and both's metrics."""
    loss, metrics = adversary.discriminator_loss(discriminator, real, generated.detach())
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        accelerator.clip_grad_norm_(discriminator.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # The bare module (its mixed-precision forward kept): under DDP the wrapped one would wait, at
    # the model's backward, for the gradients that freezing it withholds.
    with frozen(accelerator.unwrap_model(discriminator)) as judge:
        generator_loss, generator_metrics = adversary.generator_loss(judge, real, generated)
    return generator_loss, {**metrics, **generator_metrics}


def train(
    model: torch.nn.Module,
    train_dataset: Dataset,
    config: TrainingConfig,
    compute_loss: Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict]],
    evaluate: Callable[[torch.nn.Module, Accelerator, int], dict] | None = None,
    collate_fn: Callable | None = None,
    run_config: dict | None = None,
    adversary: Adversary | None = None,
) -> dict:
    """Trains `model` for `config.max_steps` optimizer steps and returns the last evaluation.

    compute_loss(model, batch) -> (loss, {name: scalar}) is called on every micro-batch; with an
    `adversary`, (loss, {name: scalar}, (real, generated)): the batches its discriminator tells apart.
    evaluate(model, accelerator, step) -> {name: float} runs on every process (so it may gather)
    every `eval_every` steps and at the end; its scalars go to TensorBoard, as do the training
    metrics, each averaged over the steps that reported it.
    The final model is written with `save_pretrained` to OUTPUT_DIR/model, its last evaluation
    beside it as eval_results.json.
    """
    if adversary is not None:
        check_adversarial_training(config, adversary.start_step)
    output_dir = prepare_output_dir(config)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # a seeded sampler makes the data order a function of (seed, epoch): resume replays it
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / RUN_MARKER, json.dumps({"run_config": {k: str(v) for k, v in (run_config or {}).items()}}, indent=1))
    set_seed(config.seed)
    workers = config.num_workers if config.num_workers is not None else default_num_workers(train_dataset, accelerator.num_processes)
    streaming = isinstance(train_dataset, IterableDataset)  # a stream, split between the processes already
    loader_options = dict(
        batch_size=config.batch_size, drop_last=True, num_workers=workers, persistent_workers=workers > 0,
        pin_memory=accelerator.device.type == "cuda", collate_fn=collate_fn,
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    trained = [model, optimizer]  # prepared in this order: the adversary's state is saved as model_1, optimizer_1
    if adversary is not None:
        parameters = adversary.discriminator.parameters()
        trained += [adversary.discriminator, torch.optim.AdamW(parameters, lr=adversary.learning_rate, weight_decay=config.weight_decay)]
    if streaming:  # its position is its own state: a StatefulDataLoader saves and restores it
        from torchdata.stateful_dataloader import StatefulDataLoader

        loader = StatefulDataLoader(train_dataset, **loader_options)
        trained = accelerator.prepare(*trained)
    else:
        # its own generator: creating an epoch's iterator must not draw from the global RNG
        loader = DataLoader(train_dataset, shuffle=True, generator=torch.Generator().manual_seed(config.seed), **loader_options)
        if len(loader) == 0:
            raise ValueError(
                f"the training set has {len(train_dataset)} examples, fewer than one batch of "
                f"{config.batch_size} per process: lower --batch_size."
            )
        *trained, loader = accelerator.prepare(*trained, loader)
    model, optimizer, *adversarial = trained
    discriminator, discriminator_optimizer = adversarial or (None, None)
    networks = [model] if discriminator is None else [model, discriminator]
    step, state = _load_checkpoint(accelerator, model, resolve_checkpoints(config), adversary)
    stream_epoch = 0
    if streaming and step:
        saved = json.loads((Path(state["path"]) / f"data-rank-{accelerator.process_index}.json").read_text())
        stream_epoch = saved["epoch"]
        loader.load_state_dict(saved["loader"])
    bad_files = state.get(SKIPPED, 0)
    accelerator.init_trackers("train", config={k: str(v) for k, v in {**asdict(config), **(run_config or {})}.items()})

    steps_per_epoch = None if streaming else max(1, len(loader) // config.gradient_accumulation_steps)

    def epoch_batches():
        """The batches of the epoch the run is in, from where it stands; and that epoch."""
        nonlocal stream_epoch
        if streaming:
            set_epoch(train_dataset, stream_epoch)
            epoch, stream_epoch = stream_epoch, stream_epoch + 1
            device = accelerator.device
            batches = ({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in loader)
            return batches, epoch
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        loader.set_epoch(epoch)
        set_epoch(train_dataset, epoch)
        skip = done_in_epoch * config.gradient_accumulation_steps
        return (accelerator.skip_first_batches(loader, skip) if skip else loader), epoch

    def data_state(epoch):  # what each process saves of its position in a stream
        return {"epoch": epoch, "loader": loader.state_dict()} if streaming else None

    bar = tqdm(
        total=config.max_steps, initial=step, desc="train", disable=not accelerator.is_local_main_process, dynamic_ncols=True
    )
    last_eval: dict = state.get("metrics", {})
    running: dict[str, float] = {}
    reports: dict[str, int] = {}  # steps that reported each metric (the adversary's only from its start)
    first_step, seconds_in_steps = step, 0.0  # wall time of training steps (not eval or saving)
    seconds_in_first_step = None  # its one-off work (k-means, loader start) kept apart for benchmarks
    model.train()
    while step < config.max_steps:
        epoch_loader, epoch = epoch_batches()
        started = time.perf_counter()
        for batch in epoch_loader:
            if isinstance(batch, dict) and SKIPPED in batch:
                running[SKIPPED] = running.get(SKIPPED, 0.0) + float(batch[SKIPPED].sum())
                batch = drop_bookkeeping(batch)
            with accelerator.accumulate(*networks):
                loss, metrics, *generated = compute_loss(model, batch)
                if adversary is not None and step >= adversary.start_step:
                    adversarial_loss, adversarial_metrics = _adversarial_terms(
                        accelerator, adversary, discriminator, discriminator_optimizer, *generated[0], config.max_grad_norm
                    )
                    loss, metrics = loss + adversarial_loss, {**metrics, **adversarial_metrics}
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            seconds_in_steps += time.perf_counter() - started
            if seconds_in_first_step is None:
                seconds_in_first_step = seconds_in_steps
            step += 1
            bar.update(1)
            for name, value in {"loss": loss.detach(), **metrics}.items():
                running[name] = running.get(name, 0.0) + float(value)
                reports[name] = reports.get(name, 0) + 1
            finished = step == config.max_steps
            if step % config.log_every == 0 or finished:
                skipped_here = accelerator.reduce(torch.tensor(running.pop(SKIPPED, 0.0), device=accelerator.device), "sum").item()
                bad_files += int(skipped_here)
                averages = {f"train/{k}": v / reports[k] for k, v in running.items()}
                accelerator.log({**averages, f"train/{SKIPPED}": bad_files}, step=step)
                bar.set_postfix({k.split("/")[1]: f"{v:.4g}" for k, v in averages.items()})
                running, reports = {}, {}
            if evaluate is not None and ((config.eval_every and step % config.eval_every == 0) or finished):
                model.eval()
                last_eval = evaluate(model, accelerator, step)
                model.train()
                accelerator.log({f"eval/{k}": v for k, v in last_eval.items()}, step=step)
                if accelerator.is_local_main_process:  # under the bar, not glued to it
                    bar.write(f"step {step}: " + ", ".join(f"{k} {v:.5g}" for k, v in last_eval.items()))
            if step % config.save_every == 0 or finished:
                trainer_state = {"metrics": {k: float(v) for k, v in last_eval.items()}, SKIPPED: bad_files}
                if adversary is not None:
                    trainer_state[ADVERSARY] = adversary.settings
                save_checkpoint(accelerator, model, output_dir, step, config.keep_checkpoints, trainer_state, data_state(epoch))
            if finished:
                break
            started = time.perf_counter()
    bar.close()
    if bad_files:
        accelerator.print(f"skipped {bad_files} unusable files (counted in trainer_state.json and the logs).")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        examples = (step - first_step) * config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
        summary = {
            "steps": step - first_step,
            "seconds_in_steps": seconds_in_steps,
            "seconds_in_first_step": seconds_in_first_step,
            "examples_per_second": examples / max(seconds_in_steps, 1e-9),
            "num_processes": accelerator.num_processes,
            "peak_rss_mb_main_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            SKIPPED: bad_files,
        }
        write_text_atomic(output_dir / "train_summary.json", json.dumps(summary, indent=2))
        final = output_dir / "model"
        tmp = output_dir / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp)
        # the last evaluation travels with the model (bundles and model cards read it)
        (tmp / EVAL_RESULTS).write_text(json.dumps({"step": step, **{k: float(v) for k, v in last_eval.items()}}, indent=2))
        publish_directory(tmp, final)
    accelerator.end_training()
    return last_eval
