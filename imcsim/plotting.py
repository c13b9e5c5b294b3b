"""Shared PNG output: figures are written under a temporary name and renamed when complete."""
from __future__ import annotations

import os
from pathlib import Path


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt
    from imcsim.verify.trace import check_writable
    path = check_writable(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial.png")
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
