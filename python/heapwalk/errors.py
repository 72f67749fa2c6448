"""Python-side exceptions and the one-line rendering of every error heapwalk can raise.

Engine exceptions come from ``heapwalk._native`` (``Error`` and its subclasses
``FormatError``, ``FaultError``, ``SymbolError``); this module turns those, ``OSError`` and
heapwalk's own errors into the ``heapwalk: <subject>: <message>`` line plus an optional hint
that both the CLI and gdb print.
"""

from __future__ import annotations

import errno
from typing import Any, Mapping, Optional, Tuple

from .render import safe

NATIVE_MISSING = "heapwalk's native module is not built: run the README's build"


class HeapwalkError(Exception):
    """An error raised by heapwalk's Python layer; ``str()`` is one user-facing line.

    ``subject`` (a file, an address, a command) prefixes the message; ``hint`` is an
    optional second line telling the user what to do.
    """

    def __init__(self, message: str, subject: Optional[str] = None,
                 hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.subject = subject
        self.hint = hint


class NativeMissingError(HeapwalkError):
    """``heapwalk._native`` could not be imported (the message names no file)."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message, subject="", hint=hint)


class UsageError(HeapwalkError):
    """Bad command-line arguments (exit status 2)."""


class NotFoundError(HeapwalkError):
    """The thing asked for (an arena, a thread) is not in the target."""


class NoTargetError(HeapwalkError):
    """gdb has no process or core file to analyse."""


def _one_line(text: str) -> str:
    """Collapse ``text`` to a single line."""
    return " ".join(str(text).split())


def _shown(text: str) -> str:
    """``text`` as an error line may show it: every control and bidi character escaped (a file
    name or a message may come from a hostile core: a newline in it must not forge a line,
    an escape sequence must not reach the terminal), then collapsed to one line."""
    return _one_line(safe(text))


def format_address(value: int) -> str:
    """The canonical ``0x`` address form used in messages (same as render.addr)."""
    return "0x%x" % value if value >= 0 else "-0x%x" % -value


def _engine_subject(exc: BaseException, default: Optional[str]) -> Optional[str]:
    """What an engine exception is about: its path, address or symbol."""
    path = getattr(exc, "path", None)
    if path:
        return str(path)
    address = getattr(exc, "address", None)
    if isinstance(address, int):
        return format_address(address)
    return default


def _engine_hint(exc: BaseException, live: bool) -> Optional[str]:
    """A hint for an engine exception, chosen by its class name (the classes are dynamic)."""
    name = type(exc).__name__
    message = str(exc).lower()
    if name == "FormatError":
        if live:
            if "no such process" in message:
                return "is the process still running? ('ps -p PID')"
            if "--max-copy" in message or "are free there" in message:
                return ("the process is copied before it is analysed: raise --max-copy, or "
                        "point TMPDIR at a filesystem with room (the copy is sparse and "
                        "deleted at exit)")
            if "capture file" in message or "snapshot" in message:
                return "the copy is written under $TMPDIR (or /tmp): is it writable?"
            return ("reading another process needs ptrace permission: run as its user or "
                    "root, and check /proc/sys/kernel/yama/ptrace_scope")
        if "truncat" in message:
            return ("the core file is incomplete (the dump was cut short: disk full, "
                    "ulimit -c, or a copy still in progress)")
        return "expected an ELF core file (made by gcore or the kernel)"
    if name == "FaultError":
        return ("the memory was not saved in the core or is not mapped "
                "(truncated core? check /proc/PID/coredump_filter)")
    if name == "SymbolError":
        return ("glibc's malloc state was not found: install libc6-dbg, "
                "or pass --sysroot DIR for a core from another system")
    return None


def _os_hint(exc: OSError, live: bool) -> Optional[str]:
    """A hint for an OS error, when there is a useful one."""
    if exc.errno in (errno.EPERM, errno.EACCES) and live:
        return ("reading another process needs ptrace permission: run as its user or root, "
                "and check /proc/sys/kernel/yama/ptrace_scope")
    if exc.errno == errno.ESRCH:
        return "no such process"
    return None


def out_of_memory(exc: BaseException) -> Optional[HeapwalkError]:
    """``exc`` as a one-line "out of memory" error when memory ran out (a MemoryError, or an
    exception raised while handling one), else None."""
    if isinstance(exc, MemoryError) or isinstance(exc.__cause__ or exc.__context__,
                                                  MemoryError):
        return HeapwalkError("out of memory", hint="the analysis needs more memory than "
                             "heapwalk may use (ulimit, cgroup)")
    return None


def describe_error(exc: BaseException, subject: Optional[str] = None,
                   native_error: Optional[type] = None,
                   live: bool = False) -> Tuple[str, Optional[str]]:
    """Return ``(line, hint)`` for ``exc``: ``line`` is ``heapwalk: <subject>: <message>``.

    ``subject`` is the default subject (e.g. the core path) used when the exception does not
    name its own; ``native_error`` is ``_native.Error`` when the engine is loaded; ``live``
    says the target is a live process (for the ptrace hint).
    """
    hint: Optional[str] = None
    if isinstance(exc, HeapwalkError):
        message = str(exc)
        subject = exc.subject if exc.subject is not None else subject
        hint = exc.hint
    elif native_error is not None and isinstance(exc, native_error):
        message = str(exc) or type(exc).__name__
        subject = _engine_subject(exc, subject)
        hint = _engine_hint(exc, live)
    elif isinstance(exc, OSError):
        message = exc.strerror or str(exc)
        if exc.filename is not None:
            subject = str(exc.filename)
        hint = _os_hint(exc, live)
    else:
        message = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
    message = _shown(message)
    subject = safe(subject) if subject else subject  # a name as it is, but escaped
    # Engine messages are meant to be complete: do not repeat a subject they already name.
    if subject and subject not in message:
        line = "heapwalk: %s: %s" % (subject, message)
    else:
        line = "heapwalk: %s" % message
    return line, (_shown(hint) if hint else None)


def override_fault(exc: BaseException, overrides: Mapping[str, Any],
                   hint: str) -> Optional[HeapwalkError]:
    """A fault reading at an address the user gave (``--main-arena``, ``set heapwalk
    main-arena``, the same for mp_) is about that address, not about the core: "0x1234 holds no
    arena", with ``hint`` (``%s``: the option's name), instead of a coredump_filter hint."""
    if type(exc).__name__ != "FaultError":
        return None
    address = getattr(exc, "address", None)
    if not isinstance(address, int):
        return None
    for key, what, option in (("main_arena", "arena", "main-arena"),
                              ("mp_", "malloc_par (mp_)", "mp")):
        given = overrides.get(key)
        if isinstance(given, int) and given <= address < given + 0x1000:
            return HeapwalkError("%s holds no %s: nothing is mapped there in the target"
                                 % (format_address(given), what), subject="",
                                 hint=hint % option)
    return None
