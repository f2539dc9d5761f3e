"""A stage's own time and peak memory, for the record a run's outputs carry (the score report shows them): on a GPU
torch's peak allocation, on the CPU the process's peak resident memory (reset first where Linux allows)."""

import time
from contextlib import contextmanager
from pathlib import Path

import torch

GB = 2 ** 30


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the peak resident memory restarts from the current one
    except OSError:
        pass  # (elsewhere: the process's peak so far, an upper bound)


def _peak_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    line = next((entry for entry in status if entry.startswith("VmHWM:")), None)
    return int(line.split()[1]) * 1024 if line else None


@contextmanager
def measured(device, name: str):
    """Inside: a stage runs. After: the dict it yielded holds ``{name}_seconds`` and ``{name}_peak_gb``."""
    device = torch.device(device)
    record: dict = {}
    _reset_peak(device)
    start = time.perf_counter()
    try:
        yield record
    finally:
        record[f"{name}_seconds"] = round(time.perf_counter() - start, 3)
        peak = _peak_bytes(device)
        if peak is not None:
            record[f"{name}_peak_gb"] = round(peak / GB, 3)
