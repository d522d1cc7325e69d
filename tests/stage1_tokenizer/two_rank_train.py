"""Run by tests/test_train_stage1.py under `accelerate launch --multi_gpu --num_processes 2`:
trains with stage one's CLI, then each rank writes its own weights for comparison."""

import sys

from accelerate import PartialState
from safetensors.torch import save_file

from stage1_tokenizer.train import main

if __name__ == "__main__":
    output_dir = sys.argv[sys.argv.index("--output_dir") + 1]
    model, _ = main(sys.argv[1:])
    rank = PartialState().process_index
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{output_dir}/rank{rank}.safetensors")
