"""Stage one: VQ-VAE tokenizers and their quantizers."""

from transformers import AutoConfig, AutoModel

from .configuration_vqvae import VQVAEConfig
from .modeling_latent_vqvae import (
    LatentVQVAEConfig,
    LatentVQVAEModel,
    LatentVQVAEOutput,
    frames_round_trip,
)
from .modeling_vqvae import VQVAEModel, VQVAEOutput

AutoConfig.register(VQVAEConfig.model_type, VQVAEConfig)
AutoModel.register(VQVAEConfig, VQVAEModel)
AutoConfig.register(LatentVQVAEConfig.model_type, LatentVQVAEConfig)
AutoModel.register(LatentVQVAEConfig, LatentVQVAEModel)

__all__ = [
    "LatentVQVAEConfig",
    "LatentVQVAEModel",
    "LatentVQVAEOutput",
    "VQVAEConfig",
    "VQVAEModel",
    "VQVAEOutput",
    "frames_round_trip",
]
