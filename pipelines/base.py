"""What the vqgen pipelines share: a `VQGenerator` bundle as the model, no tokenizer or processor
to load (inputs are resolved in each pipeline's `__call__`), and saving or uploading the bundle
with its model card."""

from __future__ import annotations

from transformers import Pipeline


class BundlePipeline(Pipeline):
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    # transformers' preprocess -> _forward -> postprocess chain is bypassed: each pipeline's
    # __call__ is one readable function (sampling loops do not fit a per-example chain)
    def _sanitize_parameters(self, **kwargs):
        return {}, kwargs, {}

    def preprocess(self, inputs, **kwargs):
        return inputs

    def _forward(self, inputs, **kwargs):
        return inputs

    def postprocess(self, outputs, **kwargs):
        return outputs

    def save_pretrained(self, save_directory, **kwargs):
        """Writes the bundle (config.json + model.safetensors) and its model card."""
        from .hub import model_card

        self.model.save_pretrained(save_directory)
        model_card(self.model, str(save_directory)).save(f"{save_directory}/README.md")

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Uploads the bundle with its model card (see `pipelines.hub.push_to_hub`)."""
        import tempfile

        from .hub import push_to_hub

        with tempfile.TemporaryDirectory() as folder:
            self.model.save_pretrained(folder)
            return push_to_hub(folder, repo_id, **kwargs)
