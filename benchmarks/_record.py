"""Shared helpers of the end-to-end benchmarks: machine facts and a markdown record."""
from __future__ import annotations

import datetime
import platform
import shlex
import subprocess
import sys

import torch


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return f"{model}; {torch.get_num_threads()} torch threads of {torch.multiprocessing.cpu_count()} CPUs"


def header(title: str) -> str:
    return "\n".join([
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        f"- torch: {torch.__version__}, python {platform.python_version()}",
        f"- command: `{' '.join(shlex.quote(a) for a in ['python'] + sys.argv)}`",
        "",
    ])


def emit(lines: list[str], out: str | None) -> str:
    """The record: printed, and written to ``out`` when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
    return text
