"""Class-conditional image generation: class names -> prior(s) -> tokenizer decoder -> PIL images.

    >>> import pipelines, transformers
    >>> generate = transformers.pipeline("vq-image-gen", model="outputs/demo/bundle")
    >>> image = generate("sneaker", seed=0)                              # one PIL image
    >>> images = generate(["sneaker", 9], num_images=4, temperature=0.9)  # 8 images, in order

The model is a `stage2_prior.VQGenerator` bundle (tokenizer + one prior per level). Sampling, as in
VQ-VAE-2: the top prior samples its codes given the class; each lower prior samples given the class
and the codes above (`context`); the decoder turns all levels into pixels.
"""

from __future__ import annotations

import torch
from PIL import Image

from stage2_prior import VQGenerator, sample_hierarchy

from .base import BundlePipeline, check_count, check_number, make_generator
from .labels import LabelResolver


class VQImageGenerationPipeline(BundlePipeline):
    def __init__(self, model: VQGenerator, **kwargs):
        if not isinstance(model, VQGenerator):
            raise TypeError(
                f"vq-image-gen needs a vqgen bundle (stage2_prior.VQGenerator), got {type(model).__name__}: "
                "write one with `python -m stage2_prior.generator` or the demo."
            )
        super().__init__(model=model, **kwargs)
        self.model.eval()
        self.labels = LabelResolver(model.config.id2label, model.config.label_set) if model.num_classes else None

    def class_ids(self, prompts) -> list[int | None]:
        """A name, an id or a list of them -> class ids (None for an unconditional bundle)."""
        if self.labels is None:
            if prompts not in (None, [], ""):
                raise ValueError(f"this bundle is unconditional (no classes); got {prompts!r}: call it without a class.")
            return [None]
        if prompts is None or (isinstance(prompts, (list, tuple)) and not prompts):
            raise ValueError(
                f"this bundle is class-conditional: pass a class name or id (or a non-empty list of them), got {prompts!r}; e.g. "
                + repr(next(iter(self.model.config.id2label.values())))
            )
        prompts = prompts if isinstance(prompts, (list, tuple)) else [prompts]  # a string is one class, not characters
        return [self.labels(p) for p in prompts]

    @torch.no_grad()
    def __call__(
        self,
        inputs=None,
        *,
        num_images: int = 1,
        temperature: float | None = None,
        top_k: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 16,
        use_cache: bool = True,
        output_type: str = "pil",
    ) -> Image.Image | list[Image.Image] | torch.Tensor:
        """inputs: a class name ("tiger beetle"), a class id (300) or a list of them. Returns one
        PIL image for one class and num_images=1, else a list, num_images per class in order.
        temperature / top_k / guidance_scale default to the bundle's settings; `seed` (or a
        `generator`) makes the images reproducible; batch_size bounds the images sampled at once.
        output_type "pt" returns one tensor (N, C, H, W) in [0, 1] instead of PIL images."""
        check_count("num_images", num_images)
        check_count("batch_size", batch_size)
        check_number("temperature", temperature)
        check_number("guidance_scale", guidance_scale)
        if output_type not in ("pil", "pt"):
            raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}.")
        defaults = self.model.config.generation
        options = {
            "temperature": temperature if temperature is not None else defaults.get("temperature", 1.0),
            "top_k": top_k if top_k is not None else defaults.get("top_k"),
            "guidance_scale": guidance_scale if guidance_scale is not None else defaults.get("guidance_scale"),
        }
        generator = make_generator(seed, generator, self.device)
        classes = [c for c in self.class_ids(inputs) for _ in range(num_images)]  # names checked before any sampling
        tokenizer, priors = self.model.tokenizer, self.model.priors
        images = []
        for start in range(0, len(classes), batch_size):
            batch = classes[start : start + batch_size]
            condition = None if batch[0] is None else torch.tensor(batch, device=self.device)
            # top prior first, each lower prior given the codes above it (VQ-VAE-2's order)
            codes = sample_hierarchy(priors, len(batch), condition, generator=generator, use_cache=use_cache, **options)
            images.append(tokenizer.decode(codes).clamp(0, 1).cpu())  # (B, C, H, W) in [0, 1]
        images = torch.cat(images)
        if output_type == "pt":
            return images
        pil = [to_pil(image) for image in images]
        return pil[0] if len(pil) == 1 and not isinstance(inputs, (list, tuple)) else pil


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> an 8-bit grayscale or RGB PIL image."""
    array = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")
