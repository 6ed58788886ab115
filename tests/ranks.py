"""Local process groups for the tests: rank processes on 127.0.0.1 over gloo, bounded in time and always
stopped (tests/test_distributed.py, tests/test_data_parallel.py)."""
import json
import os
import socket
import subprocess
import sys
import time


def env(world):
    """The environment torchrun would give `world` ranks on a free loopback port (RANK added per process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
            "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def launch(worker, world, cfg, deadline_s=120, skip_wait=()):
    """Start `world` ranks of the script `worker` with the JSON `cfg`; returns [(exit code, output)] (None
    for ranks in skip_wait, which are killed once the others are done). Every process is gone on return."""
    e = env(world)
    procs = [subprocess.Popen([sys.executable, str(worker), json.dumps(cfg)],
                              env={**e, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    deadline = time.monotonic() + deadline_s
    out = []
    try:
        for r, p in enumerate(procs):
            if r in skip_wait:
                out.append(None)
                continue
            o, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append((p.returncode, o))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out
