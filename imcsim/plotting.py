"""Shared PNG output: figures are written all-or-nothing (``imcsim.atomic``) and closed.

matplotlib is optional (``pip install 'imcsim[plot]'``); :func:`require` gives the one-line
message when it is missing.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from imcsim.atomic import AtomicOutputs
from imcsim.optional import MissingDependency, require

__all__ = ["MissingDependency", "require", "pyplot", "save_figure"]


def pyplot(feature: str = "--plot"):
    """matplotlib.pyplot on the non-interactive Agg backend (MissingDependency without it)."""
    matplotlib = require("matplotlib", "plot", feature)
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "plot", feature)


def save_figure(fig, path, *, name: str = "plot", inputs: Iterable = ()) -> Path:
    """Save a matplotlib figure as PNG all-or-nothing and close it; returns the resolved path.

    ``inputs`` are files the caller read: writing the plot over one of them is refused.
    """
    plt = require("matplotlib.pyplot", "plot", "--plot")
    try:
        with AtomicOutputs(path, names=[name], inputs=inputs) as out:
            fig.savefig(out.temporary(path), dpi=120, format="png")
    finally:
        plt.close(fig)
    return out.targets[0]
