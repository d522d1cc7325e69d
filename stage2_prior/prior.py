"""What the three priors share: the config fields of the prior contract, the output, input checks,
and the one sampling loop (`generate`) that both the cached and the uncached paths run through.

A prior models p(codes | condition, context) autoregressively in raster order (time order for
1-D sequences). `forward(codes, condition, context)` checks its inputs and returns
`PriorOutput(logits, loss)`; each model supplies the network behind it:

    _logits(codes, condition_ids, context) -> logits codes.shape + (K,)
        condition_ids (B,) with the null class num_classes for "none", or None if unconditional;
        codes may have a truncated first axis (fewer rows, a shorter sequence): the uncached
        sampling path recomputes the network over the rows generated so far, the usual baseline.
    _init_cache(batch_size, condition_ids, context) -> cache
    _cached_logits(cache, codes, index) -> (B, K) logits of flat position `index`, given codes
        (B, *code_shape) whose positions before `index` are filled.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from stage1_tokenizer.common.checks import check_ids_in_range
from stage1_tokenizer.common.loading import StrictLoading
from stage1_tokenizer.common.sampling import sample_autoregressive


@strict
class PriorConfig(PreTrainedConfig):
    r"""The fields every prior shares; each model's config adds its own. The training command
    fills the first seven from the code dataset (`DERIVED_FIELDS`)."""

    codebook_size: int = field(default=512, metadata={"help": "K, the tokenizer's codebook size."})
    code_shape: list[int] | tuple[int, ...] = field(
        default_factory=lambda: [7, 7], metadata={"help": "The code grid [h, w] of the modelled level, or [T] for sequences."}
    )
    num_classes: int = field(default=0, metadata={"help": "Classes (or speakers) of `condition`; 0 for an unconditional prior."})
    context_shape: list[int] | tuple[int, ...] | None = field(
        default=None, metadata={"help": "The code grid of the level above, for a lower-level prior."}
    )
    context_codebook_size: int | None = field(default=None, metadata={"help": "K of the level above (default: codebook_size)."})
    tokenizer_fingerprint: str | None = field(
        default=None,
        metadata={"help": "Fingerprint of the tokenizer whose codes it was trained on (stage1_tokenizer.code_dataset.tokenizer_fingerprint)."},
    )
    level: int = field(default=0, metadata={"help": "Which of the tokenizer's levels it models, 0 = top."})
    condition_dropout: float = field(
        default=0.0,
        metadata={"help": "Probability of replacing the condition by the null class while training; classifier-free guidance needs it (0.1 is usual)."},
    )

    def __post_init__(self, **kwargs):
        self.code_shape = list(self.code_shape)
        self.context_shape = list(self.context_shape) if self.context_shape is not None else None
        if self.context_codebook_size is None and self.context_shape is not None:
            self.context_codebook_size = self.codebook_size
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}.")
        if len(self.code_shape) not in (1, 2) or min(self.code_shape) < 1:
            raise ValueError(f"code_shape must be (h, w) or (T,) of positive sizes, got {self.code_shape}.")
        if self.num_classes < 0 or not 0.0 <= self.condition_dropout < 1.0:  # NaN fails too
            raise ValueError(
                f"num_classes must be >= 0 and condition_dropout in [0, 1), got {self.num_classes} and {self.condition_dropout}."
            )
        if self.condition_dropout > 0 and self.num_classes == 0:
            raise ValueError("condition_dropout needs a conditional prior: set num_classes.")
        if self.context_shape is not None and (
            len(self.context_shape) != len(self.code_shape)
            or any(side % ctx for side, ctx in zip(self.code_shape, self.context_shape))
        ):
            raise ValueError(
                f"context_shape {self.context_shape} must have as many axes as code_shape {self.code_shape} and divide it "
                "(the upper level's codes are upsampled onto the grid by an integer factor)."
            )
        super().__post_init__(**kwargs)

    @property
    def sequence_length(self) -> int:
        return math.prod(self.code_shape)


DERIVED_FIELDS = ("codebook_size", "code_shape", "num_classes", "context_shape", "context_codebook_size", "tokenizer_fingerprint", "level")


@dataclass
class PriorOutput(ModelOutput):
    """logits: codes.shape + (codebook_size,), position i from codes before i only.
    loss: mean negative log-likelihood of `codes` in nats per code."""

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None


def upsample_context(features: torch.Tensor, code_shape) -> torch.Tensor:
    """(B, C, *context_shape) -> (B, C, *code_shape): each upper-level code covers the block of
    lower-level positions under it (nearest-neighbour upsampling by the integer ratio)."""
    return F.interpolate(features, size=tuple(code_shape), mode="nearest")


class AutoregressivePrior(StrictLoading, PreTrainedModel):
    config_class = PriorConfig
    main_input_name = "codes"

    any_length = False  # True for priors that can sample sequences longer than code_shape

    # -- inputs -------------------------------------------------------------------------------------
    @property
    def null_condition(self) -> int:
        """The id of "no condition": the last row of the condition embedding."""
        return self.config.num_classes

    def condition_ids(self, condition, batch_size: int, *, allow_null: bool = False) -> torch.Tensor | None:
        """Checks `condition` and returns ids (B,) (None for an unconditional prior). While
        training with condition_dropout, a random share of them becomes the null class."""
        c = self.config
        device = self.device
        if c.num_classes == 0:
            if condition is not None:
                raise ValueError("this prior is unconditional (num_classes=0): pass condition=None.")
            return None
        if condition is None:
            if c.condition_dropout == 0 and not allow_null:
                raise ValueError(
                    f"this prior is conditional (num_classes={c.num_classes}) and was trained without "
                    "condition dropout, so it has no unconditional mode: pass condition= a LongTensor of class ids."
                )
            return torch.full((batch_size,), self.null_condition, dtype=torch.long, device=device)
        condition = torch.as_tensor(condition, device=device)
        if condition.ndim == 0:
            condition = condition.expand(batch_size)
        if condition.dtype != torch.long or condition.shape != (batch_size,):
            raise ValueError(f"condition must be a LongTensor of {batch_size} class ids, got {condition.dtype} {tuple(condition.shape)}.")
        check_ids_in_range(condition, c.num_classes, "condition ids", detail=f" (num_classes={c.num_classes})")
        if self.training and c.condition_dropout > 0:
            dropped = torch.rand(batch_size, device=device) < c.condition_dropout
            condition = condition.masked_fill(dropped, self.null_condition)
        return condition

    def check_context(self, context, batch_size: int) -> torch.Tensor | None:
        c = self.config
        if c.context_shape is None:
            if context is not None:
                raise ValueError("this prior takes no context (context_shape=None): pass context=None.")
            return None
        expected = (batch_size, *c.context_shape)
        if context is None or not torch.is_tensor(context) or tuple(context.shape) != expected or context.dtype != torch.long:
            got = "None" if context is None else f"{getattr(context, 'dtype', type(context))} {tuple(getattr(context, 'shape', ()))}"
            raise ValueError(
                f"this prior models a lower level and needs context= the codes of the level above, a LongTensor "
                f"{expected}; got {got}."
            )
        check_ids_in_range(context, c.context_codebook_size, "context ids")
        return context.to(self.device)

    def check_codes(self, codes) -> None:
        c = self.config
        shape = tuple(c.code_shape)
        ok = (
            torch.is_tensor(codes)
            and codes.dtype == torch.long
            and codes.ndim == 1 + len(shape)
            and 1 <= codes.shape[1]
            and (codes.shape[1] <= shape[0] or (self.any_length and len(shape) == 1 and c.context_shape is None))
            and tuple(codes.shape[2:]) == shape[1:]
        )
        if not ok:
            got = f"{codes.dtype} {tuple(codes.shape)}" if torch.is_tensor(codes) else type(codes).__name__
            raise ValueError(f"codes must be a LongTensor (B, {', '.join(map(str, shape))}), got {got}.")
        check_ids_in_range(
            codes, c.codebook_size, "code ids", ending=": were these codes made by a tokenizer with another codebook size?"
        )

    def prepare_inputs(self, codes, condition, context):
        """The checks of forward: returns (condition ids or None, context or None)."""
        self.check_codes(codes)
        batch_size = codes.shape[0]
        return self.condition_ids(condition, batch_size, allow_null=True), self.check_context(context, batch_size)

    def forward(self, codes: torch.Tensor, condition=None, context=None) -> PriorOutput:
        """codes (B, *code_shape) -> logits codes.shape + (K,) and the mean NLL of `codes`."""
        condition, context = self.prepare_inputs(codes, condition, context)
        logits = self._logits(codes, condition, context)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), codes.reshape(-1))
        return PriorOutput(logits=logits, loss=loss)

    # -- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        batch_size: int,
        shape=None,
        condition=None,
        context=None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        guidance_scale: float | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Samples codes (batch_size, *shape) one position at a time in raster order.

        condition: class ids (B,) or one id; context: the level above's codes (B, *context_shape).
        temperature > 0 divides the logits; top_k keeps the k most likely ids. With the same
        `generator` seed, use_cache=True (fast, per-model caches) and False (the network over all
        rows so far at each step) give the same codes. guidance_scale s (classifier-free guidance,
        for priors trained with condition_dropout): logits = uncond + s * (cond - uncond).
        progress: a tqdm bar over the positions.
        """
        c = self.config
        shape = tuple(c.code_shape) if shape is None else tuple(shape)
        if shape != tuple(c.code_shape):
            # Sequences (speech codes) may be sampled at other lengths than the training window:
            # shorter by any prior, longer by one whose weights do not depend on the position.
            sequence = len(shape) == len(c.code_shape) == 1 and c.context_shape is None and shape[0] >= 1
            if not (sequence and (shape[0] <= c.code_shape[0] or self.any_length)):
                longest = "any length" if self.any_length else f"at most {c.code_shape[0]}"
                raise ValueError(
                    f"this prior models codes of shape {tuple(c.code_shape)}"
                    + (f" (sequences of {longest})" if len(c.code_shape) == 1 and c.context_shape is None else "")
                    + f", got shape={shape}."
                )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        guided = guidance_scale is not None and guidance_scale != 1.0
        if guided and (c.num_classes == 0 or c.condition_dropout == 0):
            raise ValueError(
                "guidance_scale needs a conditional prior trained with condition_dropout > 0 "
                f"(num_classes={c.num_classes}, condition_dropout={c.condition_dropout})."
            )
        was_training = self.training
        self.eval()
        try:
            condition = self.condition_ids(condition, batch_size)
            context = self.check_context(context, batch_size)
            rows = batch_size
            if guided:  # the unconditional half rides in the same batch
                condition = torch.cat([condition, torch.full_like(condition, self.null_condition)])
                context = None if context is None else torch.cat([context, context])
                rows = 2 * batch_size
            row_length = math.prod(shape[1:])

            def full_logits(tokens, index):  # the network over the rows generated so far
                rows_so_far = index // row_length + 1
                codes = tokens.view(rows, *shape)[:, :rows_so_far]
                return self._logits(codes, condition, context).reshape(rows, -1, c.codebook_size)[:, index]

            def start_cache():
                cache = self._init_cache(rows, condition, context)
                return lambda tokens, index: self._cached_logits(cache, tokens.view(rows, *shape), index)

            tokens = sample_autoregressive(
                rows, math.prod(shape), c.codebook_size, full_logits=full_logits, start_cache=start_cache,
                use_cache=use_cache, temperature=temperature, top_k=top_k, generator=generator,
                guidance_scale=guidance_scale if guided else None, device=self.device, progress=progress,
            )  # fmt: skip
        finally:
            self.train(was_training)
        return tokens.view(batch_size, *shape)

    def _logits(self, codes, condition, context):
        raise NotImplementedError

    def _init_cache(self, batch_size, condition, context):
        raise NotImplementedError

    def _cached_logits(self, cache, codes, index):
        raise NotImplementedError


def sample_hierarchy(
    priors: list[AutoregressivePrior], batch_size: int, condition=None, *, shapes=None, **sampling
) -> list[torch.Tensor]:
    """Codes for every level of a hierarchical tokenizer, top first: the top prior samples first,
    each lower prior is then conditioned on the codes just sampled above it (`context`).
    `shapes`: one code shape per level (speech: sequence lengths), else each prior's own.
    `sampling`: generate's keyword options (temperature, top_k, generator, use_cache, ...)."""
    levels: list[torch.Tensor] = []
    for level, prior in enumerate(priors):
        if prior.config.level != level:
            raise ValueError(f"priors must be given top level first: entry {level} models level {prior.config.level}.")
        context = levels[-1] if levels else None
        shape = shapes[level] if shapes is not None else None
        levels.append(prior.generate(batch_size, shape, condition=condition, context=context, **sampling))
    return levels
