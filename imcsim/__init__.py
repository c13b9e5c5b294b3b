"""imcsim: a bit-accurate emulator of a charge-domain SRAM in-memory-computing macro.

The hardware is the 2304 x 256 XNOR/charge-sharing macro of Grimm & Verma's radix-4 training
work; the exact semantics are in docs/hardware-model.md.
"""
from imcsim.config import (
                           MacroConfig,
                           MvmKind,
                           NmcConfig,
                           NonIdealityConfig,
                           Overflow,
                           Rounding,
                           VrefConfig,
                           VrefMode,
                           load_preset,
                           save_config,
)
from imcsim.events import EVENT_NAMES, EventCounts
from imcsim.formats import BinaryFormat, Radix4Format, parse_format
from imcsim.macro import Macro, MvmResult
from imcsim.version import __version__

__all__ = ["MacroConfig", "MvmKind", "NmcConfig", "NonIdealityConfig", "Overflow", "Rounding", "VrefConfig",
           "VrefMode", "load_preset", "save_config", "BinaryFormat", "Radix4Format",
           "parse_format", "Macro", "MvmResult", "EventCounts", "EVENT_NAMES", "__version__"]
