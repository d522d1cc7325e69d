"""Two real processes (gloo): EMA statistics are summed across ranks and codebooks stay identical."""

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stage1_tokenizer.quantizers import CodebookUsage, build_quantizer


def rank_data(rank, step):
    generator = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(256, 4, generator=generator) * (1 + rank)  # ranks see different data


def worker(rank, world_size, init_file, out_dir, kind, options):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # same initial codebook on every rank
        quantizer = build_quantizer(kind, 16, 4, **options).train()
        for step in range(3):
            quantizer(rank_data(rank, step))
        np.save(f"{out_dir}/codebook_{rank}.npy", quantizer.codebook.detach().numpy())
        usage = CodebookUsage(16)  # each rank sees half of the codes; the meter sums over ranks
        usage.update(torch.arange(8) + 8 * rank)
        np.save(f"{out_dir}/usage_{rank}.npy", np.array([usage.fraction_used(), usage.perplexity()]))
    finally:
        dist.destroy_process_group()


def run_two_ranks(tmp_path, kind, options):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path), kind, options), nprocs=2, join=True)
    return [torch.from_numpy(np.load(tmp_path / f"codebook_{rank}.npy")) for rank in range(2)]


def test_ema_counts_and_sums_are_all_reduced(tmp_path):
    ranks = run_two_ranks(tmp_path, "vq-ema", {"kmeans_init": False})
    assert torch.equal(ranks[0], ranks[1])
    # one process on both ranks' data gives the same update: the statistics were summed
    torch.manual_seed(0)
    single = build_quantizer("vq-ema", 16, 4, kmeans_init=False).train()
    for step in range(3):
        single(torch.cat([rank_data(0, step), rank_data(1, step)]))
    assert torch.allclose(ranks[0], single.codebook, atol=1e-5)
    torch.manual_seed(0)
    untouched = build_quantizer("vq-ema", 16, 4, kmeans_init=False).codebook
    assert not torch.allclose(ranks[0], untouched)


def test_kmeans_init_and_dead_code_restarts_agree_across_ranks(tmp_path):
    ranks = run_two_ranks(tmp_path, "vq", {"kmeans_init": True, "dead_code_steps": 1})
    assert torch.equal(ranks[0], ranks[1])
    for rank in range(2):  # codebook usage counted over both ranks: all 16 codes, uniformly
        fraction, perplexity = np.load(tmp_path / f"usage_{rank}.npy")
        assert fraction == 1.0 and abs(perplexity - 16) < 1e-4
