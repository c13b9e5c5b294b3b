"""The ``--vref`` syntax shared by ``imcsim energy`` and ``imcsim train``: an ADC reference per
MVM kind.

One level spec is what ``VrefConfig.parse`` reads: ``variable``, ``fixed[:F]`` or
``dual[:LOW:HIGH]`` (full scales in rows).  A spec without numbers keeps the levels of ``base``
(so ``dual`` on a small array keeps that array's dual levels).  Per kind, ``KIND=SPEC``
(``forward=dual:255:2304``); items are comma-separated or given repeatedly (a list), and a
bare ``SPEC`` sets every kind.  Later items win.

It depends only on ``imcsim.config``; the training CLI imports the public
``imcsim.energy.parse_vref_per_kind`` (no energy internals).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from imcsim.config import MvmKind, VrefConfig, VrefMode

#: The three training MVMs, in order: 'forward', 'backward', 'update'.
MVM_KINDS = tuple(k.value for k in MvmKind)


def _level(spec, base: VrefConfig, kind: str) -> VrefConfig:
    """One level spec (str, VrefMode or VrefConfig) -> VrefConfig, numbers defaulting to base's."""
    if isinstance(spec, VrefConfig):
        return spec
    if isinstance(spec, VrefMode):
        return replace(base, mode=spec)
    if not isinstance(spec, str):
        raise TypeError(f"vref: expected a str, VrefMode or VrefConfig for {kind}, got "
                        f"{type(spec).__name__}")
    try:
        parsed = VrefConfig.parse(spec)
    except ValueError as exc:
        raise ValueError(f"{exc} (for {kind})") from None
    return parsed if ":" in spec else replace(base, mode=parsed.mode)


def _items(specs: str | Iterable[str]) -> list[tuple[str | None, str]]:
    """'k=s,k=s' strings (one or several) -> [(kind or None for all, spec)]."""
    texts = [specs] if isinstance(specs, str) else list(specs)
    out = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"vref: expected str items, got {type(text).__name__}")
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            kind, sep, spec = (s.strip() for s in part.partition("="))
            if not sep:
                out.append((None, part))
            elif not spec:
                raise ValueError(f"vref: expected KIND=SPEC, got {part!r}")
            else:
                out.append((kind, spec))
    return out


def parse_vref_per_kind(specs: str | Iterable[str] | Mapping | VrefConfig | None,
                        base: VrefConfig | None = None) -> dict[str, VrefConfig]:
    """ADC reference of each MVM kind from ``--vref`` specs.

    Parameters
    ----------
    specs : str or iterable of str or mapping or VrefConfig or None
        ``'dual'``, ``'forward=dual:255:2304,backward=fixed:1024'``, a list of such strings
        (a repeated option), a mapping {kind (str or MvmKind): spec or VrefMode or VrefConfig}, one VrefConfig
        for every kind, or None (every kind keeps ``base``).
    base : VrefConfig or None
        The reference of kinds not named, and the levels of a spec without numbers
        (default ``VrefConfig()``: variable).

    Returns
    -------
    dict of str to VrefConfig
        One entry per MVM kind ('forward', 'backward', 'update'), in that order.

    Raises
    ------
    ValueError
        An unknown kind, or a level spec ``VrefConfig.parse`` refuses.
    TypeError
        ``specs`` or ``base`` of a wrong type.
    """
    base = VrefConfig() if base is None else base
    if not isinstance(base, VrefConfig):
        raise TypeError(f"vref: base must be a VrefConfig, got {type(base).__name__}")
    if specs is None:
        return dict.fromkeys(MVM_KINDS, base)
    if isinstance(specs, VrefConfig):
        return dict.fromkeys(MVM_KINDS, specs)
    if isinstance(specs, Mapping):
        items = list(specs.items())
    elif isinstance(specs, (str, Iterable)):
        items = _items(specs)
    else:
        raise TypeError(f"vref: expected a str, list, dict or VrefConfig, got "
                        f"{type(specs).__name__}")
    out = dict.fromkeys(MVM_KINDS, base)
    for kind, spec in items:
        kind = kind.value if isinstance(kind, MvmKind) else kind
        if kind is None:
            out.update(dict.fromkeys(MVM_KINDS, _level(spec, base, "every kind")))
        elif kind not in out:
            raise ValueError(f"vref: unknown MVM kind {kind!r}; choose from {MVM_KINDS}")
        else:
            out[kind] = _level(spec, base, kind)
    return out
