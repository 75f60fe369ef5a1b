"""Run by tests/recipes/test_ddp.py under `torchrun --nproc-per-node 2` (gloo, CPU): one rank of a DDP job
reading a release through passkit.stream.loader.

Every batch is followed by an all_reduce, as a DDP backward pass would be: a rank with fewer
batches would leave the other blocked in the collective (the test's timeout catches that).
Writes <out>/rank<r>.json: per pass, the keys of every batch; and the resume experiment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from passkit.stream import loader


def run_pass(dl) -> list[list[str]]:
    out = []
    for images, metas in dl:
        assert images.dtype == torch.uint8 and images.shape[0] == len(metas)
        t = torch.ones(1)
        dist.all_reduce(t)  # lockstep: hangs if the ranks' batch counts differ
        assert t.item() == dist.get_world_size()
        out.append([m["key"] for m in metas])
    return out


def main() -> None:
    release, out_dir, stop = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result: dict[str, object] = {"rank": rank, "world": dist.get_world_size()}
    kw = {"batch_size": 3, "shuffle": True, "seed": 5, "buffer_size": 4, "image_size": 32}

    for balance in ("pad", "drop"):
        dl = loader(release, balance=balance, num_workers=1 if balance == "pad" else 0, **kw)
        dl.set_epoch(2)
        result[balance] = run_pass(dl)
        result[f"{balance}_len"] = len(dl)

    # Resume: stop after `stop` batches, keep state_dict, continue in a new loader (as after a restart).
    dl = loader(release, num_workers=1, **kw)
    dl.set_epoch(2)
    first: list[list[str]] = []
    for _images, metas in dl:
        dist.all_reduce(torch.ones(1))
        first.append([m["key"] for m in metas])
        if len(first) == stop:
            break
    state = json.loads(json.dumps(dl.state_dict()))  # what a checkpoint stores
    fresh = loader(release, num_workers=1, **kw)
    fresh.load_state_dict(state)
    fresh.set_epoch(state["epoch"])
    result["resume_first"] = first
    result["resume_state"] = state
    result["resume_rest"] = run_pass(fresh)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
