"""Run folders: what a training run leaves behind, read in one place.

A run folder holds ``checkpoint.npz`` (parameters, optimizer state and a ``meta`` record with
the epoch, the TrainConfig and the history), ``metrics.json``, ``metrics.csv`` and
``curves.png`` (``training.engine.Trainer``).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.json"


#: history keys that are wall times: kept in metrics.json / metrics.csv, never in the
#: checkpoint, so that two identical runs leave byte-identical checkpoints
WALL_TIME_KEYS = ("seconds",)

#: the zip timestamp of every checkpoint member (the earliest a zip can hold): a checkpoint's
#: bytes depend on its arrays only
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def without_wall_times(history: list) -> list:
    """The history rows without their wall-time keys (what a checkpoint stores)."""
    return [{k: v for k, v in row.items() if k not in WALL_TIME_KEYS} for row in history]


def write_checkpoint(fh, arrays: dict) -> None:
    """Write ``arrays`` as an ``.npz`` (``np.load`` reads it) whose bytes depend only on the
    arrays: members in the given order, uncompressed, with a fixed timestamp (``np.savez``
    stamps each member with the current time)."""
    import zipfile
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def flatten_state(state: dict, prefix: str = "") -> dict:
    """A nested state dict (an optimizer's) as the flat ``a/b/c`` keys of a checkpoint."""
    out = {}
    for k, v in state.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_state(v, key + "/"))
        else:
            out[key] = v
    return out


def unflatten_state(flat: dict) -> dict:
    """``flatten_state`` undone: 0-d arrays read back as scalars."""
    out: dict = {}
    for key, v in flat.items():
        parts = key.split("/")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v[()] if np.ndim(v) == 0 else v
    return out


def restore_wall_times(history: list, folder) -> list:
    """``history`` (from a checkpoint) with the wall times ``metrics.json`` in ``folder``
    recorded for the same epochs, where it has them."""
    try:
        saved = {row["epoch"]: row for row in read_metrics(folder)["history"]}
    except (ValueError, KeyError, TypeError):
        saved = {}
    out = []
    for row in history:
        old = saved.get(row.get("epoch"), {})
        out.append({**row, **{k: old[k] for k in WALL_TIME_KEYS if k in old}})
    return out


def checkpoint_meta(path) -> dict:
    """The ``meta`` record of a checkpoint: ``{"epoch", "config", "history"}``.

    Raises ValueError naming the file when it is missing, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no checkpoint")
    try:
        with np.load(path, allow_pickle=False) as ck:
            meta = json.loads(str(ck["meta"]))
        int(meta["epoch"])
        meta["config"], meta["history"]             # noqa: B018 - both must be there
    except Exception as exc:         # BadZipFile, EOFError, KeyError, JSON and zlib errors
        raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                         f"{type(exc).__name__})") from None
    return meta


def same_run(saved, config) -> bool:
    """Whether a checkpoint written under TrainConfig ``saved`` continues as ``config``: all
    fields equal except those that do not change the weights (the epoch count, which extends
    the schedule's run, the device and the diagnostics' sampling)."""
    return replace(saved, epochs=config.epochs, device=config.device,
                   diagnostic_steps=config.diagnostic_steps) == config


def resumable_checkpoint(folder, config) -> bool:
    """True when ``folder`` holds a readable checkpoint of the same run as ``config``
    (:func:`same_run`) with the same epoch count, so that resuming it gives the result of an
    uninterrupted run; a missing, unreadable or foreign checkpoint gives False."""
    try:
        meta = checkpoint_meta(Path(folder) / CHECKPOINT_NAME)
        saved = type(config).from_json(meta["config"])     # a TrainConfig, without importing
                                                            # the engine (which imports this)
    except (ValueError, TypeError, KeyError):
        return False
    return saved.epochs == config.epochs and same_run(saved, config)




def read_metrics(folder) -> dict:
    """``metrics.json`` of a run folder: ``{"config": {...}, "history": [row, ...]}``.

    Raises ValueError naming the file when it is missing or not a run's metrics.
    """
    path = Path(folder) / METRICS_NAME
    if not path.is_file():
        raise ValueError(f"{folder}: not a run folder (no {METRICS_NAME})")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable as JSON ({type(exc).__name__})") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("history"), list)
            and isinstance(doc.get("config"), dict)):
        raise ValueError(f"{path}: not a run's metrics (no config and history)")
    return doc


#: diagnostics columns of :func:`diagnostics_table`: (key, heading, format)
DIAGNOSTIC_COLUMNS = (("bias", "bias/rms", "{:+.3f}"), ("rms_error", "rmse/rms", "{:.3f}"),
                      ("cosine", "cos", "{:.3f}"), ("cosine_centred", "cos-c", "{:.3f}"),
                      ("snr_db", "SNR dB", "{:.1f}"), ("lossy_share", "lossy", "{:.3f}"),
                      ("clipped_share", "clipped", "{:.4f}"), ("calls", "calls", "{:d}"))


def diagnostics_table(doc: dict, epoch: int | None = None) -> str:
    """The per-MVM error diagnostics of one epoch of a run (the last by default) as text.

    Parameters
    ----------
    doc : dict
        A run's metrics (:func:`read_metrics`).
    epoch : int or None
        1-based epoch; None: the last epoch that has diagnostics.
    """
    rows = [r for r in doc["history"] if isinstance(r, dict) and r.get("mvm_error")]
    if not rows:
        raise ValueError("the run has no per-MVM diagnostics (trained with --diagnostic-steps 0, "
                         "or no MVM on the emulator)")
    if epoch is None:
        row = rows[-1]
    else:
        found = [r for r in rows if r.get("epoch") == epoch]
        if not found:
            raise ValueError(f"--epoch: no diagnostics for epoch {epoch}; epochs with them: "
                             f"{', '.join(str(r.get('epoch')) for r in rows)}")
        row = found[0]
    head = ["layer", "mvm"] + [h for _, h, _ in DIAGNOSTIC_COLUMNS]
    table = [head]
    for layer, kinds in row["mvm_error"].items():
        for kind, rec in kinds.items():
            cells = [layer, kind]
            for key, _, fmt in DIAGNOSTIC_COLUMNS:
                v = rec.get(key)
                if v is None and key == "snr_db" and rec.get("exact_match"):
                    cells.append("exact")
                else:
                    cells.append("-" if v is None else fmt.format(v))
            table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = [f"epoch {row.get('epoch')}: test accuracy {row.get('test_acc', float('nan')):.4f}; "
             "each emulator MVM against the exact product of the same operands"]
    for r in table:
        lines.append("  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


__all__ = ["CHECKPOINT_NAME", "METRICS_NAME", "WALL_TIME_KEYS", "flatten_state",
           "unflatten_state", "without_wall_times",
           "write_checkpoint", "restore_wall_times", "checkpoint_meta", "same_run",
           "resumable_checkpoint", "read_metrics", "diagnostics_table"]
