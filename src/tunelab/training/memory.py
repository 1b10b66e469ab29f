"""Peak memory of the training process: max allocated on CUDA, resident set size (sampled) on CPU."""

from __future__ import annotations

import psutil
import torch


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device = device
        self._proc = psutil.Process()
        self.start_rss = self._proc.memory_info().rss
        self.peak_rss = self.start_rss
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def as_dict(self) -> dict[str, int | str]:
        self.sample()
        out: dict[str, int | str] = {"peak_rss_bytes": self.peak_rss, "rss_at_start_bytes": self.start_rss,
                                     "peak_rss_increase_bytes": self.peak_rss - self.start_rss}
        if self.device.type == "cuda":
            out["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
        out["measured"] = "cuda max_memory_allocated" if self.device.type == "cuda" else "process RSS, sampled per step"
        return out
