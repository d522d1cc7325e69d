"""Stage one: VQ-VAE tokenizers and their quantizers."""

from transformers import AutoConfig, AutoModel

from .configuration_vqvae import VQVAEConfig
from .modeling_vqvae import VQVAEModel, VQVAEOutput

AutoConfig.register(VQVAEConfig.model_type, VQVAEConfig)
AutoModel.register(VQVAEConfig, VQVAEModel)

__all__ = ["VQVAEConfig", "VQVAEModel", "VQVAEOutput"]
