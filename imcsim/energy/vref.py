"""The ``--vref`` syntax of ``imcsim energy`` (kept importable here): the grammar lives with
the config, ``imcsim.config.parse_vref_per_kind``, and every command and sweep key uses it
(``imcsim train``, ``imcsim energy``; ``mvm``/``config`` take one SPEC of the same grammar)."""
from __future__ import annotations

from imcsim.config import MvmKind, parse_vref_per_kind

#: The three training MVMs, in order: 'forward', 'backward', 'update'.
MVM_KINDS = tuple(k.value for k in MvmKind)

__all__ = ["MVM_KINDS", "parse_vref_per_kind"]
