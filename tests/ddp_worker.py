"""One rank of a data-parallel training test (tests/test_data_parallel.py starts several, on 127.0.0.1).

argv[1] is a JSON dict: job ("grads" or "train"), data (.npz with x, y; the split for "train"), out
(a folder; each rank writes its results there as ``rank{r}.*``), timeout (process-group seconds), and for
"grads" the cases (see ``tests/test_data_parallel.py``, CASES); for "train", the runs (tests/ddp_cases.py).
"""
import datetime
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ddp_cases import one_step_gradients, resume_mismatch, train_cases  # noqa: E402

from deephash.training.data_parallel import DataParallel  # noqa: E402


def main() -> int:
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=cfg["timeout"]))
    try:
        par = DataParallel()
        d = np.load(cfg["data"])
        if cfg["job"] == "grads":
            for name, case in cfg["cases"].items():
                loss, grads = one_step_gradients(case, d["x"], d["y"], par)
                np.savez(os.path.join(cfg["out"], f"rank{rank}.{name}.npz"), loss=np.float64(loss),
                         **{k: v.numpy() for k, v in grads.items()})
        else:
            train_cases(cfg, par, rank)
            print(f"rank {rank} mismatch: {resume_mismatch(cfg, par, rank)}", flush=True)
        print(f"rank {rank} ok", flush=True)
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
