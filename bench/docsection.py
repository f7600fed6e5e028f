"""Generated sections of docs/benchmarks.md for the Python benchmarks (the TypeScript twin is
ts-core/bench/doc-section.ts): a benchmark owns the text between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->` and replaces only that; a missing section is appended. Every section says the
command, the commit, the machine and the load average at the start and the end of the run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DOC = ROOT / "docs" / "benchmarks.md"


def commit_id() -> str:
    """Short commit of the measured tree, `+dirty` with uncommitted changes (the generated doc aside)."""
    try:
        git = ["git", "-C", str(ROOT)]
        cid = subprocess.check_output([*git, "rev-parse", "--short=10", "HEAD"], text=True).strip()
        dirty = subprocess.check_output([*git, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                         ":!docs/benchmarks.md"], text=True).strip()
        return f"{cid}+dirty" if dirty else cid
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class RunInfo:
    """What every section states: the command, the commit, the machine, the load at the start and the end."""

    def __init__(self):
        py = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else "python"
        self.command = " ".join([py, os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
        self.commit = commit_id()
        self.load_start = load_avg()
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def footer(self) -> str:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        return (f"Command `{self.command}`; commit `{self.commit}`; {self.started}; {os.cpu_count()} CPUs "
                f"({_cpu_model()}), GPU: {gpu}; torch {torch.__version__} on {torch.get_num_threads()} thread(s); "
                f"load average {self.load_start} at the start, {load_avg()} at the end.")


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def verdict(value: float, target: float) -> str:
    return "**met**" if value <= target else "**not met**"


def write_section(name: str, body: str, path: Path = BENCH_DOC) -> None:
    """Replace (or append) the generated section `name` of `path` with `body` (markdown, no markers)."""
    open_m, close_m = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{open_m}\n{body.strip()}\n{close_m}"
    a, b = text.find(open_m), text.find(close_m)
    out = text[:a] + block + text[b + len(close_m):] if a >= 0 and b > a else f"{text.rstrip()}\n\n{block}\n"
    path.write_text(out)
    print(f"wrote section {name!r} of {os.path.relpath(path, ROOT)}")


def gpu_note() -> str:
    import torch

    return "" if torch.cuda.is_available() else GPU_NOTE


GPU_NOTE = ("No GPU was available to the session that generated this section, so the GPU figures (sketch cost on "
            "the device, and the trainer's overhead with CUDA tensors) are not measured; the same command measures "
            "them when `torch.cuda.is_available()`.")
