"""How every command of the project ends: its result, or one line on stderr and a non-zero exit.

A failure a user can meet (missing weights, a bad file or option, no face, no CUDA, out of memory, a
full disk, an output path that is a file or not writable) is one line; so is an unexpected one, with
the exception's type. `--debug` (or PORTRAIT_DEBUG=1) lets the traceback through instead.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Callable, Sequence

from .errors import PortraitError

DEBUG_ENV = "PORTRAIT_DEBUG"
FAILED, UNEXPECTED, INTERRUPTED = 2, 1, 130  # 2: a failure the user can act on (as argparse's usage errors)


class CommandParser(argparse.ArgumentParser):
    """argparse with a `--debug` flag and usage errors on one line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help=f"show tracebacks (also ${DEBUG_ENV}=1)")

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (--help lists the options)\n")


def port(text: str) -> int:
    """An argparse type: a TCP port number."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number from 1 up."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def run(
    main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None, prog: str | None = None
) -> int:
    """Call `main(argv)`; turn what it raises into one line on stderr and an exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0]) or "portrait"
    if "--debug" in argv or os.environ.get(DEBUG_ENV) == "1":
        logging.getLogger().setLevel(logging.DEBUG)
        result = main(argv)
        return result if isinstance(result, int) else 0
    try:
        result = main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - every failure ends as one line; --debug shows the rest
        message, expected = describe(error)
        print(f"{prog}: error: {message}" + ("" if expected else " (--debug shows where)"), file=sys.stderr)
        return FAILED if expected else UNEXPECTED
    return result if isinstance(result, int) else 0


def describe(error: BaseException) -> tuple[str, bool]:
    """One line that says what went wrong, in words a user can act on; and whether it is such a failure."""
    import torch

    if isinstance(error, PortraitError):
        return one_line(str(error)), True
    if isinstance(error, torch.OutOfMemoryError):
        return "out of GPU memory: use fewer images, a smaller size, a smaller batch or --dtype fp16", True
    if isinstance(error, MemoryError):
        return "out of memory: use fewer images, a smaller size or a smaller batch", True
    if isinstance(error, OSError) and error.errno is not None:
        return _os_error(error), True
    text = one_line(str(error))
    return (f"{type(error).__name__}: {text}" if text else type(error).__name__), False


def _os_error(error: OSError) -> str:
    where = f": {error.filename}" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return f"no space left on the disk{where}; free some space or write elsewhere"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not allowed to write or read{where}; choose another place"
    if error.errno == errno.ENOENT:
        return f"no such file or folder{where}"
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"a file stands where a folder is needed{where}"
    if error.errno == errno.EISDIR:
        return f"a folder stands where a file is needed{where}"
    return one_line(f"{error.strerror or error}{where}")


def one_line(text: str) -> str:
    return " ".join(str(text).split())
