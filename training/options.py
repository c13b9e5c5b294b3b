"""One front door for a training run's parameters: ``imcsim train``'s options and a sweep's
``train`` keys become a :class:`~imcsim.training.engine.TrainConfig` through the same rules.

The rules that a command line adds on top of the TrainConfig fields live here, once:

- ``imc`` (``--imc``): the MVM kinds on the emulator ('forward,backward', 'all' or '');
  ``other`` (``--other``): the backend of the kinds not on the emulator.  Without ``other``
  it is 'exact' when some kind is on the emulator and 'fp32' when none is; given, it applies
  as given (``imc=''`` with ``other='exact'`` is an all-exact run, the training scheme alone);
- ``vref`` (``--vref [KIND=]SPEC``, comma-separated or repeated, the grammar of
  ``imcsim.config.parse_vref_per_kind``): a bare SPEC sets every kind, kinds not named keep
  'variable';
- ``batch`` and ``max_steps`` are aliases of ``batch_size`` and ``max_steps_per_epoch``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from imcsim.config import MvmKind, parse_mvm_kinds, split_kind_items, vref_texts_per_kind

#: option names accepted beside the TrainConfig field names
TRAIN_ALIASES = {"batch": "batch_size", "max_steps": "max_steps_per_epoch"}

KIND_NAMES = tuple(k.value for k in MvmKind)


def kind_pairs(value, name: str, default: str | None) -> tuple[tuple[str, str], ...]:
    """Per-kind values in forward/backward/update order.

    Parameters
    ----------
    value : mapping, str or sequence
        ``{kind: v}``, ``"kind=v,kind=v"``, ``["kind=v", ...]`` or ``[[kind, v], ...]``.
    name : str
        The parameter's name, for errors.
    default : str or None
        The value of kinds not given; None: every kind is required.

    Returns
    -------
    tuple of (kind, value) pairs, one per MVM kind.
    """
    if not isinstance(value, (Mapping, str, Sequence)):
        raise ValueError(f"{name}: expected a mapping kind -> value, got {value!r}")
    # the item grammar is the one of every per-kind option (imcsim.config); a bare value,
    # which names every kind there, is refused here
    items = split_kind_items(dict(value) if isinstance(value, Mapping) else value, name)
    given = {}
    for kind, v in items:
        if kind is None or not isinstance(v, str) or not v:
            raise ValueError(f"{name}: expected KIND=VALUE with KIND in {', '.join(KIND_NAMES)}, "
                             f"got {kind!r}={v!r}")
        given[kind] = v
    missing = [k for k in KIND_NAMES if k not in given]
    if missing and default is None:
        raise ValueError(f"{name}: no value for {', '.join(missing)}")
    return tuple((k, given.get(k, default)) for k in KIND_NAMES)


def backends_for(imc="", other: str | None = None) -> tuple[tuple[str, str], ...]:
    """The backend of each MVM kind from ``--imc`` and ``--other`` (module docstring)."""
    kinds = parse_mvm_kinds(imc or "")
    fallback = other if other is not None else ("exact" if kinds else "fp32")
    return tuple((k, "imc" if k in kinds else fallback) for k in KIND_NAMES)


def train_config(params: Mapping):
    """A TrainConfig from TrainConfig field names plus the options of the module docstring.

    Raises ValueError naming the first bad or unknown parameter.
    """
    from imcsim.training.engine import TrainConfig
    p = dict(params)
    names = [f.name for f in fields(TrainConfig)]
    unknown = [k for k in p if k not in names and k not in TRAIN_ALIASES
               and k not in ("imc", "other")]
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for train; known: "
                         f"{', '.join(sorted(names + list(TRAIN_ALIASES) + ['imc', 'other']))}")
    for alias, name in TRAIN_ALIASES.items():
        if alias in p:
            if name in p:
                raise ValueError(f"{alias} and {name}: give one of them")
            p[name] = p.pop(alias)
    if "imc" in p or "other" in p:
        if "backends" in p:
            raise ValueError("imc/other and backends: give one or the other")
        p["backends"] = backends_for(p.pop("imc", "") or "", p.pop("other", None))
    if "backends" in p:
        p["backends"] = kind_pairs(p["backends"], "backends", None)
    if "vref" in p:                                # the one grammar (imcsim.config)
        p["vref"] = vref_texts_per_kind(p["vref"])
    if p.get("data_folder") is not None:
        p["data_folder"] = str(Path(p["data_folder"]).expanduser().resolve())
    try:
        return TrainConfig(**p)
    except TypeError as exc:
        raise ValueError(f"train: {exc}") from None


__all__ = ["TRAIN_ALIASES", "kind_pairs", "backends_for", "train_config"]
