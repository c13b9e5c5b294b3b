"""Optional dependencies, loaded lazily with a one-line message naming the extra to install.

matplotlib (extra ``plot``), scikit-learn and tqdm (extra ``train``) are not needed to emulate
the macro; code that uses them calls :func:`require` at the point of use::

    plt = require("matplotlib.pyplot", "plot", "--plot")
    # without matplotlib: MissingDependency("--plot needs matplotlib: pip install 'imcsim[plot]'")

The CLI's error wrapper (``imcsim.cli.common.cli_errors``) prints that message as one line and
exits with status 2.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module_name: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module_name`` or raise :class:`MissingDependency`.

    Parameters
    ----------
    module_name : the module to import (``"matplotlib.pyplot"``).
    extra : the imcsim extra that installs it (``"plot"``, ``"train"``).
    feature : what needs it, for the message (``"--plot"``); default "this feature".
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".", 1)[0]
        if exc.name is not None and exc.name.split(".", 1)[0] != top:
            raise                                   # the module exists but one of its imports is missing
        raise MissingDependency(f"{feature or 'this feature'} needs {top}: "
                                f"pip install 'imcsim[{extra}]'", name=top) from None
