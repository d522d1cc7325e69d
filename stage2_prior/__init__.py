"""Stage two: autoregressive priors over the codes of a stage-one tokenizer."""

from transformers import AutoConfig, AutoModel

from .bundle import VQGenerator, VQGeneratorConfig, write_bundle
from .pixelcnn import PixelCNNConfig, PixelCNNPrior
from .prior import AutoregressivePrior, PriorConfig, PriorOutput, sample_hierarchy
from .transformer import TransformerConfig, TransformerPrior
from .wavenet import WaveNetConfig, WaveNetPrior

# --prior NAME -> (config class, model class)
PRIORS = {
    "pixelcnn": (PixelCNNConfig, PixelCNNPrior),
    "wavenet": (WaveNetConfig, WaveNetPrior),
    "transformer": (TransformerConfig, TransformerPrior),
}

AutoConfig.register(PixelCNNConfig.model_type, PixelCNNConfig)
AutoModel.register(PixelCNNConfig, PixelCNNPrior)
AutoConfig.register(TransformerConfig.model_type, TransformerConfig)
AutoModel.register(TransformerConfig, TransformerPrior)
AutoConfig.register(WaveNetConfig.model_type, WaveNetConfig)
AutoModel.register(WaveNetConfig, WaveNetPrior)
AutoConfig.register(VQGeneratorConfig.model_type, VQGeneratorConfig)
AutoModel.register(VQGeneratorConfig, VQGenerator)

__all__ = [
    "PRIORS",
    "AutoregressivePrior",
    "PixelCNNConfig",
    "PixelCNNPrior",
    "PriorConfig",
    "PriorOutput",
    "TransformerConfig",
    "TransformerPrior",
    "VQGenerator",
    "VQGeneratorConfig",
    "WaveNetConfig",
    "WaveNetPrior",
    "sample_hierarchy",
    "write_bundle",
]
