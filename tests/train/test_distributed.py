"""Multi-process training: 2 CPU processes (gloo) with batch 1 each train like 1 process with batch 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import stcn
from stcn.train.trainer import _IterationSampler


def test_ranks_together_read_the_single_process_batches():
    one = list(_IterationSampler(3, 6, batch_size=4, rank=0, world=1))
    ranks = [list(_IterationSampler(3, 6, batch_size=2, rank=r, world=2)) for r in range(2)]
    merged = [i for it in range(3) for r in range(2) for i in ranks[r][2 * it: 2 * it + 2]]
    assert merged == one


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


@pytest.mark.timeout(300)
def test_two_processes_train_like_one(tmp_path):
    """Same logged (global) loss at every iteration, same weights. BatchNorm frozen as in the paper's
    stages: Adam turns even rounding-level gradient differences into whole steps, so parameters whose
    gradient is ~0 may differ by up to 2 * lr * iterations; all others agree to 1e-5."""
    common = ["train", "--stage", "synthetic", "--iterations", "2", "--crop", "64", "--log-every", "1",
              "--freeze-bn", "--save-every", "100"]
    one = subprocess.run([sys.executable, "-m", "stcn.cli", *common, "--batch-size", "2", "--run-dir",
                          str(tmp_path / "one")], env=_env(), capture_output=True, text=True, timeout=240, check=False)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(_free_port()), "-m", "stcn.cli", *common,
                          "--batch-size", "1", "--run-dir", str(tmp_path / "two")],
                         env=_env(), capture_output=True, text=True, timeout=240, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    logs = {}
    for run in ("one", "two"):
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        logs[run] = [json.loads(line) for line in lines]
    assert [x["it"] for x in logs["two"]] == [1, 2]  # rank 0 alone writes the log
    for a, b in zip(logs["one"], logs["two"]):
        for key in ("loss/total_loss", "loss/loss_1", "loss/loss_2", "iou/object1"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    a = stcn.read_checkpoint(tmp_path / "one" / "final.safetensors").state_dict
    b = stcn.read_checkpoint(tmp_path / "two" / "final.safetensors").state_dict
    assert a.keys() == b.keys()
    lr, iterations = 2e-4, 2
    total = differing = 0
    for k in a:
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
            continue
        diff = (a[k].float() - b[k].float()).abs()
        assert diff.max() <= 2 * lr * iterations + 1e-6, k
        total += diff.numel()
        differing += int((diff > 1e-5).sum())
    assert differing <= 1e-3 * total, (differing, total)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 2, 1))


def _input():
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _global_bn_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank (run as a script: ``python test_distributed.py RANK WORLD PORT OUT``)."""
    import torch.distributed as dist

    from stcn.train.distributed import convert_batchnorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    net = convert_batchnorm(_net(), cuda=False)
    y = net(_input()[2 * rank: 2 * rank + 2])
    (y ** 2).mean().backward()
    for p in net.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world
    torch.save({"y": y.detach(), "grads": [p.grad for p in net.parameters()], "running": net[1].running_var.clone()},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_global_batchnorm_equals_full_batch_batchnorm(tmp_path):
    """The CPU replacement of SyncBatchNorm: outputs, gradients and running statistics of 2 ranks x 2
    samples equal plain BatchNorm on the 4 samples."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, __file__, str(r), "2", str(port), str(tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=100)
        assert p.returncode == 0, out[-2000:]
    net = _net()
    y = net(_input())
    # each rank's loss is its samples' mean; DDP averages the gradients
    (((y[:2] ** 2).mean() + (y[2:] ** 2).mean()) / 2).backward()
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([r["y"] for r in results]), y.detach(), rtol=1e-5, atol=1e-6)
    for r in results:
        for got, want in zip(r["grads"], [p.grad for p in net.parameters()]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(r["running"], net[1].running_var, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    _global_bn_worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
