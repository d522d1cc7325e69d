"""Build a generator bundle from trained parts: a tokenizer and its priors, top level first.

    python -m stage2_prior.generator --tokenizer runs/fmnist/model --priors runs/fmnist_prior/model \
        --output_dir bundles/fashion_mnist [--label_set imagenet-1k]

The bundle (`stage2_prior.bundle`) is one model folder that `transformers.pipeline("vq-image-gen",
model=DIR)` loads; parts that do not belong together are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stage1_tokenizer.common.files import check_output_dir
from stage1_tokenizer.common.recipes import parse_command

from .bundle import write_bundle


@dataclass
class BundleArguments:
    tokenizer: str = field(metadata={"help": "The tokenizer's model folder."})
    priors: list[str] = field(metadata={"help": "The priors' model folders, top level first."})
    output_dir: str = field(metadata={"help": "Where the bundle is written."})
    label_set: str | None = field(default=None, metadata={"help": "'imagenet-1k' for ImageNet names and synonyms."})
    training_data: str | None = field(default=None, metadata={"help": "The training data, for the model card."})
    temperature: float = field(default=1.0, metadata={"help": "Default sampling temperature of the pipeline."})
    top_k: int | None = field(default=None, metadata={"help": "Default top-k of the pipeline."})
    guidance_scale: float | None = field(default=None, metadata={"help": "Default guidance scale."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an --output_dir that vqgen did not write."})


def main(argv=None) -> Path:
    (args,) = parse_command(argv, (BundleArguments,), description=__doc__)
    check_output_dir(args.output_dir, args.overwrite_output_dir)  # before any work
    generation = {"temperature": args.temperature, "top_k": args.top_k, "guidance_scale": args.guidance_scale}
    path = write_bundle(args.tokenizer, args.priors, args.output_dir, label_set=args.label_set,
                        generation=generation, training_data=args.training_data, overwrite=args.overwrite_output_dir)  # fmt: skip
    print(f"wrote the bundle to {path}")
    return path


if __name__ == "__main__":
    main()
