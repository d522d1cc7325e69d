"""The README's Python examples run as written (and the two commands it names exist)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write "my-tokenizer" to the working directory
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["out"].codes.shape == (8, 16, 16)
    assert namespace["images"].shape == (4, 1, 28, 28)
    assert (tmp_path / "my-tokenizer" / "model.safetensors").exists()


def test_readme_commands_exist():
    text = README.read_text()
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert command in text
        assert (README.parent / command.split()[1]).exists()
