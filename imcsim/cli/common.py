"""The one CLI convention shared by every ``imcsim`` command.

- :func:`cli_errors` wraps a command: one error line on stderr and a fixed exit status
  (:data:`EXIT_OK` 0 success, :data:`EXIT_MISMATCH` 1 a check found mismatches,
  :data:`EXIT_USAGE` 2 bad input or usage, :data:`EXIT_INTERNAL` 3 internal error,
  :data:`EXIT_INTERRUPTED` 130 interrupted, :data:`EXIT_BROKEN_PIPE` 141 silently, when the
  reader of stdout went away, as in ``imcsim trace show T | head -3``); ``imcsim --debug``
  shows the traceback too, with the same status.
  A SIGINT at any time until the process ends is ``interrupted`` and 130
  (:class:`CommandInterrupts`, :func:`end_process`).
- :func:`macro_config_options` / :func:`macro_config_from_options`: the flags that build a
  ``MacroConfig`` and the one function that reads them.
- :func:`operand_options`, :func:`load_npy`, :func:`save_npy`: operand files.

Every file a command writes goes through ``imcsim.atomic.AtomicOutputs`` (all-or-nothing,
outputs compared with inputs and with each other after resolving the paths).
"""
from __future__ import annotations

import atexit
import functools
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import numpy as np

from imcsim.atomic import interrupts_seen, note_interrupt
from imcsim.config import (
    MacroConfig,
    NonIdealityConfig,
    VrefConfig,
    VrefMode,
    load_preset,
    preset_names,
    vref_level,
)
from imcsim.errors import first_line
from imcsim.optional import MissingDependency

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
#: the reader of stdout closed the pipe: no message (there is no one to read it), and the
#: status of a program killed by SIGPIPE (128 + 13), which Python ignores in favour of an error
EXIT_BROKEN_PIPE = 141

#: the exit statuses, for the main group's help
EXIT_CODES_HELP = ("Exit status: 0 success; 1 a check found mismatches; 2 bad input or usage; "
                   "3 internal error (rerun with --debug for the traceback); 130 interrupted; "
                   "141 stdout's reader went away.")

F = TypeVar("F", bound=Callable[..., Any])


class MismatchFound(Exception):
    """Raised by a command whose comparison found mismatches (exit status 1).

    The command prints its report first; a non-empty message is printed as one more line on
    stderr.
    """


class CliError(click.ClickException):
    """A one-line error with an explicit exit status (``prefix`` + message on stderr)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, prefix: str = "Error: "):
        super().__init__(message)
        self.exit_code = exit_code
        self.prefix = prefix

    def show(self, file=None) -> None:
        if self.prefix or self.message:
            click.echo(f"{self.prefix}{self.format_message()}", file=file, err=file is None)


def debug_enabled() -> bool:
    """True under ``imcsim --debug`` (or with IMCSIM_DEBUG=1 in the environment)."""
    if os.environ.get("IMCSIM_DEBUG", "") not in ("", "0"):
        return True
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    obj = ctx.find_root().obj
    return bool(isinstance(obj, dict) and obj.get("debug"))


#: exceptions that mean the input (arguments, files, environment) is unusable: exit 2
INPUT_ERRORS = (ValueError, TypeError, OSError, MissingDependency)


def cli_errors(fn: F) -> F:
    """Decorator for click commands: the one error convention of ``imcsim``.

    - ValueError, TypeError, OSError (FileNotFoundError, PermissionError, ...), a missing
      optional dependency, ``click.BadParameter`` and other click usage errors raised inside
      the command: ``Error: <message>`` (one line) on stderr, exit status 2;
    - :class:`MismatchFound`: exit status 1 (the command has printed its report);
    - KeyboardInterrupt (SIGINT), also one swallowed on its way up and one that arrives after
      the command while the process ends: ``interrupted`` on stderr, exit status 130
      (:class:`CommandInterrupts`, :func:`end_process`);
    - anything else: ``internal error: <type>: <message> (rerun with --debug for the
      traceback)``, exit status 3.

    Under ``imcsim --debug`` every exception except KeyboardInterrupt and MismatchFound
    prints its traceback on stderr before its line; the exit status stays the same (bad input
    is still 2 with --debug, so scripts that rerun a command with it see the same outcome).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        program = runs_as_program()
        with CommandInterrupts() as interrupts:
            try:
                result = fn(*args, **kwargs)
                if interrupts.interrupted:      # swallowed on its way up: still interrupted
                    raise KeyboardInterrupt
                if program:
                    end_process(None)
            except BaseException as exc:
                error = as_cli_error(exc, interrupts.interrupted)
                if error is None:
                    raise
                if error.exit_code in (EXIT_USAGE, EXIT_INTERNAL) and debug_enabled():
                    traceback.print_exception(type(exc), exc, exc.__traceback__,
                                              file=sys.stderr)
                    _flush_std()                # the traceback before the error's line
                if program:
                    end_process(error)
                raise error from None
            return result
    return wrapper  # type: ignore[return-value]


def as_cli_error(exc: BaseException, interrupted: bool = False) -> CliError | None:
    """The :class:`CliError` a command's exception ends in (see :func:`cli_errors`), or None
    when it must propagate (click's own exits, SystemExit and other non-Exception exits).
    The same with and without ``--debug``: the flag adds the traceback, never changes the
    status."""
    if isinstance(exc, (click.exceptions.Exit, click.Abort)):
        return None
    if interrupted or isinstance(exc, KeyboardInterrupt):
        return CliError("interrupted", EXIT_INTERRUPTED, prefix="")
    if isinstance(exc, MismatchFound):
        message = str(exc).strip()
        return CliError(message.splitlines()[0] if message else "", EXIT_MISMATCH, prefix="")
    if isinstance(exc, CliError):
        return exc
    if not isinstance(exc, Exception):
        return None
    if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
        silence_stdout()
        return CliError("", EXIT_BROKEN_PIPE, prefix="")
    if isinstance(exc, click.ClickException):
        return CliError(first_line(exc.format_message()), EXIT_USAGE)
    if isinstance(exc, INPUT_ERRORS):
        return CliError(first_line(exc), EXIT_USAGE)
    return CliError(f"internal error: {type(exc).__name__}: {first_line(exc)} "
                    "(rerun with --debug for the traceback)", EXIT_INTERNAL, prefix="")


def stdout_reader_gone() -> bool:
    """True when stdout is a pipe or socket whose reading end is closed (``poll`` reports an
    error on it), so a BrokenPipeError came from stdout and not from, say, a cluster's socket."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):       # no poll (Windows), no file descriptor
        return False


def silence_stdout() -> None:
    """Point stdout at the null device, so the bytes still buffered for the closed pipe are
    dropped at exit instead of raising a second BrokenPipeError there."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


# --- interrupts ---------------------------------------------------------------------------
def _count_and_raise(signum, frame):
    note_interrupt()
    raise KeyboardInterrupt


class CommandInterrupts:
    """SIGINT during one command: raised as KeyboardInterrupt as usual, and also counted
    (``imcsim.atomic.note_interrupt``).

    A KeyboardInterrupt raised inside a destructor or a library callback is swallowed there
    (Python prints an "Exception ignored" traceback and goes on), so the command used to
    finish and exit 0.  Counted, it still ends the command as interrupted, and
    ``AtomicOutputs.commit`` refuses to publish outputs after it; its traceback is not
    printed.  Python runs signal handlers in the main thread only: elsewhere (a command run
    from a worker thread) this does nothing.  A handler installed by the caller is kept.
    """

    def __enter__(self) -> CommandInterrupts:
        self.start = interrupts_seen()
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.handler = signal.getsignal(signal.SIGINT)
            if self.handler is signal.default_int_handler:
                signal.signal(signal.SIGINT, _count_and_raise)
            self.hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def _unraisable(self, info) -> None:
        if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
            note_interrupt()
            return
        self.hook(info)

    @property
    def interrupted(self) -> bool:
        """Whether a SIGINT arrived since the command started."""
        return interrupts_seen() != self.start

    def __exit__(self, *exc: object) -> None:
        if self.active:
            if signal.getsignal(signal.SIGINT) is _count_and_raise:
                signal.signal(signal.SIGINT, self.handler)
            if sys.unraisablehook == self._unraisable:
                sys.unraisablehook = self.hook


def runs_as_program() -> bool:
    """Whether this process is the ``imcsim`` program (its console script or ``python -m
    imcsim``), whose command's end is the end of the process -- not a command invoked by
    another program (click's CliRunner, a script calling ``main``), which goes on after it."""
    if threading.current_thread() is not threading.main_thread():
        return False
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "imcsim.__main__":
        return True
    return bool(sys.argv and sys.argv[0]) and Path(sys.argv[0]).name in ("imcsim", "imcsim.exe")


def _interrupted_at_exit(signum, frame):
    # a signal handler: no buffered I/O (it may have interrupted a write to the same stream)
    os.write(2, b"interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):       # a closed pipe or stream: nothing more to say
            pass


def end_process(error: CliError | None) -> NoReturn:
    """End the ``imcsim`` process right after its command: print ``error`` (if any), run the
    atexit callbacks, exit with its status (0 without one).

    Python's own shutdown after a command takes about half a second (the compiled kernels'
    JIT is torn down) and stops running signal handlers early: a SIGINT in that time killed
    the process without a message (status -2), and one during an atexit callback printed an
    ignored-exception traceback and exited 0.  From here on a SIGINT prints ``interrupted``
    and exits 130; the outputs are complete by now (``AtomicOutputs`` committed them), and
    nothing is left for the skipped teardown to do (every file is closed).
    """
    signal.signal(signal.SIGINT, _interrupted_at_exit)
    if error is not None:
        error.show()
    _flush_std()
    shutdown = getattr(threading, "_shutdown", None)   # what Python's exit runs first: joins
    if shutdown is not None:                           # the non-daemon threads
        shutdown()
    atexit._run_exitfuncs()
    _flush_std()
    os._exit(EXIT_OK if error is None else error.exit_code)


# --- MacroConfig from flags ----------------------------------------------------------------
#: flag name -> NonIdealityConfig field
NONIDEAL_OPTIONS = {
    "cell_mismatch": "cell_cap_sigma",
    "parasitic": "parasitic_ratio",
    "cdac_mismatch": "cdac_unit_sigma",
    "comparator_offset": "comparator_offset_sigma",
    "comparator_noise": "comparator_noise_sigma",
    "sampling_noise": "sampling_noise_sigma",
    "dac_mismatch": "dac_unit_sigma",
}
#: flag name -> NmcConfig field
NMC_OPTIONS = {
    "scale_frac_bits": "scale_frac_bits",
    "acc_bits": "acc_bits",
    "overflow": "overflow",
    "out_frac_bits": "out_frac_bits",
    "out_bits": "out_bits",
    "out_rounding": "out_rounding",
}
GEOMETRY_OPTIONS = ("rows", "columns", "adc_bits")
VREF_OPTIONS = {"vref_mode": "mode", "full_scale": "full_scale", "dual_low": "dual_low",
                "dual_high": "dual_high"}
CONFIG_OPTION_NAMES = (("preset", "chip_seed", "mask_zeros", "adc_rounding", "input_bits")
                       + tuple(NONIDEAL_OPTIONS) + tuple(NMC_OPTIONS) + GEOMETRY_OPTIONS
                       + tuple(VREF_OPTIONS))


def macro_config_options(fn: F) -> F:
    """The flags that build a MacroConfig (read them with :func:`macro_config_from_options`)."""
    opts = [
        click.option("--preset", default="paper", show_default=True,
                     help=f"Macro preset ({', '.join(preset_names())}) or a JSON file."),
        click.option("--vref", "vref_mode", metavar="SPEC",
                     help="ADC reference: variable, fixed[:F] or dual[:LOW:HIGH][:column] "
                          "(full scales in rows; the grammar of every command's --vref, one "
                          "SPEC here: this MVM has one kind); levels not given keep the "
                          "preset's, and --full-scale/--dual-low/--dual-high override them "
                          "(default: the preset's)."),
        click.option("--full-scale", type=int, help="Fixed-mode full scale F [rows]."),
        click.option("--dual-low", type=int, help="Dual mode low full scale [rows]."),
        click.option("--dual-high", type=int, help="Dual mode high full scale [rows]."),
        click.option("--rows", type=int, help="Override the preset's rows (e.g. an RTL's ROWS); "
                     "Vref levels not given then follow the new geometry."),
        click.option("--columns", type=int, help="Override the preset's columns."),
        click.option("--adc-bits", type=int, help="Override the preset's ADC bits."),
        click.option("--cell-mismatch", type=float, help="Relative sigma of bit-cell capacitors."),
        click.option("--parasitic", type=float, help="Column parasitic / total cell capacitance."),
        click.option("--cdac-mismatch", type=float, help="Relative sigma of a CDAC unit capacitor."),
        click.option("--comparator-offset", type=float, help="Comparator offset sigma [rows]."),
        click.option("--comparator-noise", type=float, help="Comparator noise sigma [rows]."),
        click.option("--sampling-noise", type=float, help="Sampling (kT/C) noise sigma [rows]."),
        click.option("--input-bits", type=int,
                     help="Row DAC resolution [bits], 1..5 (multi-level x formats such as "
                          "radix4:8/2 or binary:6/3 need 3; docs/hardware-model.md 4.8)."),
        click.option("--dac-mismatch", type=float,
                     help="Relative sigma of a row-DAC unit source (static, per row and bit)."),
        click.option("--chip-seed", type=int, help="Seed of the chip's static mismatch."),
        click.option("--mask-zeros/--no-mask-zeros", default=None,
                     help="Mask rows whose binary input is 0."),
        click.option("--adc-rounding", type=click.Choice(["floor", "half_up"]),
                     help="ADC law over the preset's (the presets: half_up): floor (the "
                          "paper's printed formula) or half_up (a rounding quantizer: "
                          "thresholds half an LSB lower)."),
        click.option("--scale-frac-bits", type=int, help="Override nmc.scale_frac_bits."),
        click.option("--acc-bits", type=int, help="Override nmc.acc_bits (small values saturate)."),
        click.option("--overflow", type=click.Choice(["saturate", "wrap"]),
                     help="NMC accumulator overflow rule."),
        click.option("--out-frac-bits", type=int, help="Override nmc.out_frac_bits."),
        click.option("--out-bits", type=int, help="Override nmc.out_bits."),
        click.option("--out-rounding", type=click.Choice(["floor", "half_up", "half_even"]),
                     help="Override nmc.out_rounding."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def device_option(fn: F) -> F:
    """``--device cpu|cuda``: where the fast path runs (cuda needs ``pip install 'imcsim[gpu]'``)."""
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
                        show_default=True,
                        help="Run the fast path on the CPU or on a CUDA GPU (results are "
                             "bit-identical).")(fn)


def preset_file(kw: dict) -> Path | None:
    """The preset option when it names a JSON file (an input a command must not overwrite)."""
    preset = kw.get("preset")
    return Path(preset) if preset and Path(preset).suffix else None


def macro_config_from_options(kw: dict) -> MacroConfig:
    """A MacroConfig from the flags of :func:`macro_config_options`.

    Pops every config flag from ``kw`` (missing ones count as not given), starts from the
    preset and applies the flags given.  With --rows or --adc-bits, the Vref levels not given
    follow the new geometry (fixed F = rows, dual levels L and rows).
    """
    given = {k: kw.pop(k, None) for k in CONFIG_OPTION_NAMES}
    data = load_preset(given["preset"] or "paper").to_dict()
    for k in GEOMETRY_OPTIONS:
        if given[k] is not None:
            data[k] = given[k]
    rows, top = data["rows"], (1 << data["adc_bits"]) - 1
    if isinstance(rows, int) and isinstance(top, int) and rows < top:
        raise ValueError(f"rows ({rows}) must be at least the top ADC code "
                         f"2**adc_bits - 1 = {top}")
    vref = data["vref"]
    if given["rows"] is not None or given["adc_bits"] is not None:
        vref.update({"full_scale": rows, "dual_low": top, "dual_high": rows})
    if given["vref_mode"] is not None:             # one SPEC of the shared grammar
        level = vref_level(given["vref_mode"], VrefConfig(**{
            **vref, "mode": VrefMode(vref["mode"]),
            "per_column": False}), "--vref")
        vref.update(mode=level.mode.value, full_scale=level.full_scale,
                    dual_low=level.dual_low, dual_high=level.dual_high,
                    per_column=level.per_column)
    for opt, key in VREF_OPTIONS.items():
        if opt != "vref_mode" and given[opt] is not None:
            vref[key] = given[opt]
    ni = dict(data["nonideal"])
    ni.update({key: given[opt] for opt, key in NONIDEAL_OPTIONS.items()
               if given[opt] is not None})
    data["nonideal"] = NonIdealityConfig(**ni).__dict__      # validates the flags' values
    data["nmc"].update({key: given[opt] for opt, key in NMC_OPTIONS.items()
                        if given[opt] is not None})
    if given["chip_seed"] is not None:
        data["chip_seed"] = given["chip_seed"]
    if given["mask_zeros"] is not None:
        data["mask_zero_inputs"] = given["mask_zeros"]
    if given["adc_rounding"] is not None:
        data["adc_rounding"] = given["adc_rounding"]
    if given["input_bits"] is not None:
        data["input_bits"] = given["input_bits"]
    return MacroConfig.from_dict(data)


# --- operand files ------------------------------------------------------------------------
def operand_options(fn: F) -> F:
    """--w/--x .npy operands and their formats (shared by mvm and vectors)."""
    opts = [
        click.option("--w", "w_path", type=click.Path(dir_okay=False),
                     help="W (M x N) integers, .npy."),
        click.option("--x", "x_path", type=click.Path(dir_okay=False),
                     help="X (B x M) values, .npy."),
        click.option("--x-format", default="binary:6", show_default=True,
                     help="Streamed operand format: binary:K or radix4:K, or a multi-level "
                          "mapping binary:K/N (signed N-bit digits) or radix4:K/E (E exponents "
                          "per cycle), which needs --input-bits."),
        click.option("--w-format", default="binary:5", show_default=True,
                     help="Stored operand format: binary:K."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


#: the first bytes of every .npy file
NPY_MAGIC = b"\x93NUMPY"


def load_npy(path, name: str, *, ndim: int | None = None) -> np.ndarray:
    """One numeric array from a .npy file (no pickles), in native byte order.

    Every problem is a ValueError (one line naming ``name`` and the file): no such file, an
    empty, truncated or corrupt file, an .npz or pickle, a non-numeric dtype, another number
    of dimensions than ``ndim``, or more data than the memory available (checked from the
    header, before reading).  Big-endian data is converted to the machine's byte order.
    """
    from imcsim.checks import check_memory, native
    if not Path(path).is_file():
        raise ValueError(f"{name}: no such file {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path} ({exc.strerror or exc})") from None
    # name what the file is instead of NumPy's guess (a text file reads as "pickled data")
    if head.startswith(b"PK"):
        raise ValueError(f"{name}: cannot read {path} as .npy (a zip archive, .npz?, not one "
                         "array)")
    if head and not NPY_MAGIC.startswith(head[:len(NPY_MAGIC)]):
        raise ValueError(f"{name}: cannot read {path} as .npy (no NumPy header: a text file? "
                         "write it with numpy.save)")
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:        # EOFError, ValueError, OSError, UnpicklingError, ...
        reason = ("empty file" if Path(path).stat().st_size == 0 else
                  "truncated: shorter than its header says" if "mmap length" in str(exc)
                  else first_line(exc))
        raise ValueError(f"{name}: cannot read {path} as .npy ({reason})") from None
    if not isinstance(mapped, np.ndarray):
        if hasattr(mapped, "close"):
            mapped.close()
        raise ValueError(f"{name}: {path} holds no single array (an .npz archive?)")
    if mapped.dtype.kind not in "iuf" or mapped.dtype.itemsize > 8:
        raise ValueError(f"{name}: {path} holds {mapped.dtype} values; expected integers or "
                         "floats")
    if ndim is not None and mapped.ndim != ndim:
        raise ValueError(f"{name}: {path} holds a {mapped.ndim}-D array of shape "
                         f"{mapped.shape}; expected {ndim}-D")
    check_memory(name, mapped.nbytes)
    try:
        arr = np.array(mapped)                # reads the data (mmap closes with it)
    except Exception as exc:
        raise ValueError(f"{name}: cannot read {path} ({first_line(exc)})") from None
    return native(arr)


def save_npy(path, array: np.ndarray) -> None:
    """Write one array as .npy to ``path`` (an ``AtomicOutputs.temporary`` path)."""
    with open(path, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
