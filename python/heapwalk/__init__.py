"""heapwalk: walk glibc malloc arenas in an ELF core or a live process.

The engine is the C++ extension ``heapwalk._native``; this package renders its results and
exposes the same commands to the CLI (``python3 -m heapwalk``) and to gdb (``gdbinit``).

    >>> import heapwalk
    >>> with heapwalk.open_core("core.1234") as target:
    ...     report = target.arenas()
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any, Dict, Optional

from .errors import NATIVE_MISSING, HeapwalkError, NativeMissingError
from .target import Target

__all__ = ["Target", "HeapwalkError", "open_core", "attach", "from_gdb", "native"]

#: The release, as CMakeLists.txt's ``project(heapwalk VERSION …)`` (a test keeps them equal).
__version__ = "0.1.0"


def native() -> ModuleType:
    """Return ``heapwalk._native``, importing it on first use.

    Raises :class:`NativeMissingError` (one line, no traceback material) when the extension
    is not built or cannot be loaded. Tests replace it by setting ``heapwalk._native``.
    """
    module = globals().get("_native")
    if module is not None:
        return module
    try:
        module = importlib.import_module(__name__ + "._native")
    except ImportError as exc:
        here = os.path.dirname(os.path.abspath(__file__))
        built = [n for n in os.listdir(here) if n.startswith("_native") and
                 n.endswith(".so")]
        if built:
            raise NativeMissingError(
                "heapwalk's native module failed to load: %s" % exc,
                hint="rebuild it with the README's build for %s (python %d.%d)"
                % (sys.executable, *sys.version_info[:2])) from None
        raise NativeMissingError(NATIVE_MISSING) from None
    globals()["_native"] = module
    return module


def open_core(path: str, sysroot: Optional[str] = None,
              overrides: Optional[Dict[str, Any]] = None) -> Target:
    """Open an ELF core file (gcore or kernel); ``sysroot`` prefixes module paths.

    ``overrides`` (see native/bindings/API.md): ``main_arena``, ``mp_``, ``tcache_key``,
    ``glibc_version``, ``no_files`` (use nothing from disk, only the memory image).
    """
    handle = native().open_core(os.fspath(path), sysroot, overrides or None)
    return Target(handle, os.fspath(path), "core")


def attach(pid: int, overrides: Optional[Dict[str, Any]] = None,
           sysroot: Optional[str] = None, capture: bool = True, java_heap: bool = False,
           max_copy: Optional[int] = None, snapshot: Optional[str] = None,
           tmpdir: Optional[str] = None, store: str = "auto") -> Target:
    """Attach to a live process.

    By default the process is captured: frozen only while the memory heapwalk reads is
    copied, then released; the copy is kept in memory when it fits in half of the available
    memory, else in a temporary sparse core file (under ``tmpdir``, else $TMPDIR or /tmp);
    ``store`` ("memory", "file") forces one; every query analyses the copy. ``java_heap``
    copies a JVM's Java heap too (not needed by any analysis); ``max_copy`` refuses a copy larger than that many bytes;
    ``snapshot`` keeps the copy as that core file. ``capture=False`` reads the process in
    place instead, frozen until :meth:`Target.close`.

    ``sysroot`` is where the process's files live when it runs in a container or chroot
    and its maps name them by in-container paths.
    """
    handle = native().attach(int(pid), None, overrides or None, sysroot, capture, java_heap,
                             max_copy, snapshot, tmpdir, store)
    return Target(handle, "pid %d" % int(pid), "live")


def from_gdb() -> Target:
    """The current gdb inferior (core or process) as a Target; only works inside gdb."""
    from . import gdbcmd  # pylint: disable=import-outside-toplevel
    return gdbcmd.current_target()


def _register_commands() -> None:
    from .commands import _register_extensions  # pylint: disable=import-outside-toplevel
    _register_extensions()


_register_commands()
