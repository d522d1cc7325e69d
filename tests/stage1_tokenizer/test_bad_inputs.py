"""Bad input to stage one, as a new user would give it: every case is refused with the right error
type, a message that names the value, and nothing written or deleted (a user's folder sits in
the working directory throughout, and must come out untouched)."""

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as train_cli
from stage1_tokenizer.code_dataset import load_code_dataset
from stage1_tokenizer.data import AudioCrops, read_audio
from stage1_tokenizer.quantizers import build_quantizer

TINY = ["--model.hidden_channels", "8", "--model.code_dim", "4", "--model.codebook_size", "16", "--model.quantizer", "vq"]


def train(*flags):
    return lambda root: train_cli.main([*TINY, "--output_dir", str(root / "run"), *flags])


def train_recipe(text):
    def run(root):
        recipe = Path(tempfile.mkdtemp()) / "recipe.yaml"  # outside the watched folder
        recipe.write_text(text)
        return train_cli.main([str(recipe), "--output_dir", str(root / "run")])

    return run


def encode(*flags):
    return lambda root: encode_cli.main(["--tokenizer", str(root / "tokenizer"), "--output_dir", str(root / "codes"), *flags])


def image_model():
    return VQVAEModel(VQVAEConfig(hidden_channels=8, code_dim=4, codebook_size=16, quantizer="vq")).eval()


def audio_model():
    return VQVAEModel(VQVAEConfig(modality="audio", hidden_channels=8, code_dim=4, codebook_size=16, quantizer="vq")).eval()


# (name, the call on a sandbox folder, error type, a regex the message must match: it names the value)
CASES = [
    ("train: negative weight decay", train("--weight_decay", "-1"), ValueError, r"--weight_decay got -1\.0"),
    ("train: NaN learning rate", train("--learning_rate", "nan"), ValueError, r"--learning_rate got nan"),
    ("train: zero batch size", train("--batch_size", "0"), ValueError, r"--batch_size got 0"),
    ("train: unknown precision", train("--mixed_precision", "fp8"), ValueError, r"'fp8'"),
    ("train: zero eval limit", train("--eval_limit", "0"), ValueError, r"--eval_limit must be a positive number.*got 0"),
    ("train: unknown bad-file policy", train("--on_bad_file", "ignore"), ValueError, r"'ignore'"),
    ("train: a typo in a flag", train("--max_step", "5"), ValueError, r"'--max_step'; did you mean '--max_steps'"),
    ("train: a typo in a model flag", train("--model.codebok_size", "5"), ValueError, r"'--model.codebok_size'.*--model.codebook_size"),
    ("train: a number that is not one", train("--max_steps", "ten"), ValueError, r"'ten'"),
    ("train: image size not divisible", train("--model.image_size", "30"), ValueError, r"image_size 30 .*use 28 or 32"),
    ("train: unknown quantizer", train("--model.quantizer", "vqx"), ValueError, r"'vqx'"),
    ("train: a typo in a quantizer option", train("--model.quantizer_options", "{betta: 1}"), TypeError, r"'betta' \(did you mean 'beta'\?\)"),
    ("train: a NaN quantizer option", train("--model.quantizer_options", "{beta: .nan}"), ValueError, r"beta .* got nan"),
    ("train: a mapping that is not YAML", train("--model.quantizer_options", "{beta: [1"), ValueError, r"quantizer_options"),
    ("train: output folder is a file", lambda root: train_cli.main([*TINY, "--output_dir", str(root / "user" / "notes.txt")]),
     NotADirectoryError, r"notes\.txt is a file"),
    ("train: output folder holds a user's files", lambda root: train_cli.main([*TINY, "--output_dir", str(root / "user")]),
     FileExistsError, r"user already holds files that vqgen did not write.*--overwrite_output_dir"),
    ("train: no such checkpoint", train("--resume_from_checkpoint", "nowhere/step-0000010"), FileNotFoundError, r"nowhere/step-0000010"),
    ("train: a local dataset path with a typo", train("--dataset", "data/my_images"), FileNotFoundError,
     r"dataset='data/my_images' is no file or folder here"),
    ("train: audio data for an image model", train("--dataset", "speech"), ValueError, r"--dataset speech is audio"),
    ("train: Fashion-MNIST for a color model", train("--model.in_channels", "3"), ValueError, r"1 x 28 x 28.*3 x 28 x 28"),
    ("train: audio crops not a multiple of the stride",
     train("--model.modality", "audio", "--dataset", "speech", "--segment_length", "1000"), ValueError, r"--segment_length 1000"),
    ("recipe: not YAML", train_recipe("model: {codebook_size: [1"), ValueError, r"recipe .*recipe\.yaml is not valid YAML"),
    ("recipe: not a mapping", train_recipe("- max_steps\n- 5\n"), ValueError, r"recipe .*recipe\.yaml must be a mapping.*list"),
    ("recipe: an unknown key", train_recipe("max_step: 5\n"), ValueError, r"recipe\.yaml: unknown option 'max_step'; did you mean 'max_steps'"),
    ("recipe: model: not a mapping", train_recipe("model: 5\n"), ValueError, r"`model:` must be a mapping.*5"),
    ("recipe: an unknown model field", train_recipe("model: {codebok_size: 5}\n"), ValueError, r"`model.codebok_size`.*'codebook_size'"),
    ("encode: an unknown split", encode("--split", "tarin"), ValueError, r"--split 'tarin' is not a split of fashion_mnist.*train, test"),
    ("encode: zero examples", encode("--limit", "0"), ValueError, r"--limit must be a positive number, got 0"),
    ("encode: output folder holds a user's files", lambda root: encode_cli.main(["--tokenizer", str(root / "tokenizer"),
     "--output_dir", str(root / "user")]), FileExistsError, r"user already holds files"),
    ("encode: a tokenizer path with a typo", lambda root: encode_cli.main(["--tokenizer", "runs/tokenizr/model",
     "--output_dir", str(root / "codes")]), FileNotFoundError, r"--tokenizer='runs/tokenizr/model' is no file or folder here"),
    ("load: not a code dataset", lambda root: load_code_dataset(root / "user"), FileNotFoundError, r"user is not a code dataset"),
    ("model: 8-bit images", lambda root: image_model()(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)), TypeError,
     r"torch\.uint8.*divide 8-bit images by 255"),
    ("model: images in [0, 255]", lambda root: image_model()(torch.full((1, 1, 28, 28), 255.0)), ValueError,
     r"\[0, 1\], got \[255, 255\].*divide 8-bit images by 255"),
    ("model: int16 audio", lambda root: audio_model()(torch.zeros(1, 1, 128, dtype=torch.int16)), TypeError,
     r"torch\.int16.*int16: divide by 32768"),
    ("model: audio beyond full scale", lambda root: audio_model()(torch.full((1, 1, 128), 3.0)), ValueError, r"got \[3, 3\]"),
    ("config: one codeword", lambda root: VQVAEConfig(codebook_size=1), ValueError, r"codebook_size must be at least 2, got 1"),
    ("config: three levels", lambda root: VQVAEConfig(num_levels=3), ValueError, r"num_levels must be 1.*got 3"),
    ("quantizer: NaN commitment weight", lambda root: build_quantizer("vq", 8, 2, beta=math.nan), ValueError, r"beta .* got nan"),
    ("quantizer: NaN decay", lambda root: build_quantizer("vq-ema", 8, 2, decay=math.nan), ValueError, r"decay .* got nan"),
    ("quantizer: fractional restart interval", lambda root: build_quantizer("vq", 8, 2, dead_code_steps=2.5), ValueError,
     r"dead_code_steps .* got 2\.5"),
    ("audio: stereo without mixing", lambda root: read_audio(root / "user" / "stereo.wav", 8000), ValueError, r"stereo\.wav has 2 channels.*mix_to_mono"),
    ("audio: zero-length crops", lambda root: AudioCrops([], 0), ValueError, r"segment_length .* got 0"),
]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder holding a user's own folder (a note, a stereo recording) and an untrained tokenizer."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("my own work")
    soundfile.write(tmp_path / "user" / "stereo.wav", np.zeros((800, 2), dtype=np.float32) + 0.1, 8000)
    torch.manual_seed(0)
    image_model().save_pretrained(tmp_path / "tokenizer")
    return tmp_path


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_with_the_value_and_nothing_is_touched(sandbox, name, call, error, message):
    before = snapshot(sandbox)
    with pytest.raises(error, match=message):
        call(sandbox)
    assert snapshot(sandbox) == before  # nothing written, nothing deleted
