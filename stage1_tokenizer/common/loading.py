"""Strict loading of vqgen's models: a model folder whose weights do not match its config exactly
is refused, instead of loading with freshly initialised (or ignored) tensors."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError


class StrictLoading:
    """Mixed into every vqgen `PreTrainedModel`: `from_pretrained` raises ValueError naming the
    file and every missing, unexpected or mis-shaped tensor, and names the path of a truncated or
    corrupt safetensors file."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        wants_info = kwargs.pop("output_loading_info", False)
        kwargs["ignore_mismatched_sizes"] = True  # report every mismatch below, by name, then refuse
        weights = Path(str(pretrained_model_name_or_path)) / "model.safetensors"
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        except SafetensorError as error:
            raise ValueError(
                f"{weights} is not a complete safetensors file ({error}): it was truncated or corrupted; "
                "save or download the model again."
            ) from error
        problems = []
        if info["missing_keys"]:
            problems.append(f"missing tensors {sorted(info['missing_keys'])}")
        if info["unexpected_keys"]:
            problems.append(f"unexpected tensors {sorted(info['unexpected_keys'])}")
        if info["mismatched_keys"]:
            shapes = [f"{name} {tuple(stored)} (the config makes {tuple(wanted)})" for name, stored, wanted in sorted(info["mismatched_keys"])]
            problems.append(f"tensors of the wrong shape {shapes}")
        if problems:
            raise ValueError(
                f"{weights} does not hold the weights its config.json describes: {'; '.join(problems)}. "
                "Use the model folder these weights were saved with."
            )
        return (model, info) if wants_info else model
