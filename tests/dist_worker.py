"""One rank of a sharded-search test (tests/test_distributed.py starts several, on 127.0.0.1).

argv[1] is a JSON dict: dir (shard folder), queries (.npy of packed codes, read by rank 0), k, out
(result prefix), timeout (process-group seconds), and optionally hang_rank / die_rank (a rank that
sleeps or exits before the search) and dst (gather to one rank).
"""
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from deephash.search.distributed import ShardedIndex, ShardError


def main() -> int:
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    # A generous rendezvous (ranks start at different speeds on a busy machine); the search itself
    # runs on a group with the test's timeout.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=max(120, cfg["timeout"])))
    try:
        group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=cfg["timeout"]))
        sharded = ShardedIndex(cfg["dir"], group=group)
        if cfg.get("hang_rank") == rank:
            time.sleep(3600)
        if cfg.get("die_rank") == rank:
            os._exit(3)
        q = torch.from_numpy(np.load(cfg["queries"])) if rank == 0 else None
        res = sharded.search(q, cfg["k"], dst=cfg.get("dst"))
        if res is not None:
            np.savez(f"{cfg['out']}.{rank}.npz", d=res[0].numpy(), ids=res[1].numpy())
        print(f"rank {rank} ok", flush=True)
        return 0
    except ShardError as e:
        print(f"rank {rank} ShardError: {e}", flush=True)
        return 2
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
