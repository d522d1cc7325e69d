"""The README's Python examples run as written (and the two commands it names exist)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def tiny_demo_bundle(path):
    """What the demo writes to outputs/demo/bundle, in miniature (Fashion-MNIST's labels)."""
    import torch

    from stage1_tokenizer import VQVAEConfig, VQVAEModel
    from stage1_tokenizer.data.fashion_mnist import FASHION_MNIST_LABELS
    from stage1_tokenizer.code_dataset import tokenizer_fingerprint
    from stage2_prior import PixelCNNConfig, PixelCNNPrior, VQGenerator

    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(hidden_channels=8, code_dim=4, codebook_size=128)).eval()
    prior = PixelCNNPrior(PixelCNNConfig(codebook_size=128, code_shape=(7, 7), num_classes=10, hidden_channels=8, num_layers=2,
                                         output_channels=8, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
                                         id2label=dict(enumerate(FASHION_MNIST_LABELS))))  # fmt: skip
    VQGenerator.from_parts(tokenizer, [prior]).save_pretrained(path)


def tiny_speech_bundle(path):
    """What the speech demo writes to outputs/demo/speech/bundle, in miniature (its voices)."""
    import torch

    from stage1_tokenizer import VQVAEConfig, VQVAEModel
    from stage1_tokenizer.data import SYNTHETIC_SPEAKERS
    from stage1_tokenizer.code_dataset import tokenizer_fingerprint
    from stage2_prior import VQGenerator, WaveNetConfig, WaveNetPrior

    torch.manual_seed(0)
    speakers = [name for name, *_ in SYNTHETIC_SPEAKERS]
    tokenizer = VQVAEModel(VQVAEConfig(modality="audio", sampling_rate=16000, hidden_channels=8, code_dim=4,
                                       codebook_size=32, speakers=speakers)).eval()  # fmt: skip
    prior = WaveNetPrior(WaveNetConfig(codebook_size=32, code_shape=(64,), num_classes=len(speakers), residual_channels=8,
                                       skip_channels=8, num_layers=2, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
                                       id2label=dict(enumerate(speakers))))  # fmt: skip
    VQGenerator.from_parts(tokenizer, [prior]).save_pretrained(path)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write "my-tokenizer" to the working directory
    tiny_demo_bundle(tmp_path / "outputs" / "demo" / "bundle")
    tiny_speech_bundle(tmp_path / "outputs" / "demo" / "speech" / "bundle")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["out"].codes.shape == (8, 16, 16)
    assert namespace["images"].shape == (4, 1, 28, 28)
    assert (tmp_path / "my-tokenizer" / "model.safetensors").exists()
    assert namespace["image"].size == (28, 28)
    assert [c.shape for c in namespace["speech_codes"]] == [(2, 250)] and namespace["as_bob"].shape == (2, 1, 16000)
    assert namespace["speech"]["sampling_rate"] == 16000 and len(namespace["speech"]["audio"]) == 32000
    assert len(namespace["converted"]["audio"]) == 32000


def test_readme_commands_exist():
    text = README.read_text()
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert command in text
        assert (README.parent / command.split()[1]).exists()
