"""The gdb front end: ``heapwalk`` commands over the current inferior.

This is the only module that imports ``gdb``. It builds one gdb command per entry of the
shared registry (help text and options come from the same argparse parsers as the CLI),
picks the engine target for the selected inferior, and caches it until the inferior runs.

Target selection:
  * a core file (connection type ``core``): ``_native.open_core(path, sysroot)``, the engine
    mmaps the file itself;
  * a live native process: ``_native.attach(pid, threads)`` with each thread's ``fs_base``
    read through gdb (gdb already traces the process, so the engine must not ptrace it); the
    engine reads ``/proc/PID/mem`` in bulk;
  * anything else (gdbserver, or when the above fail): ``_native.open_callback`` reading
    memory through ``gdb.Inferior.read_memory``.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import gdb  # type: ignore[import-not-found]  # pylint: disable=import-error

import heapwalk
from . import commands as registry
from . import render, termwidth
from .commands import Command, Invocation, ParserExit
from .errors import (HeapwalkError, NoTargetError, UsageError, describe_error, out_of_memory,
                     override_fault)
from .render import Style
from .target import Target

PREFIX = "heapwalk"

_CORE_FILE = re.compile(r"Local core dump file:\s*`(.*)',")


# -- target selection and caching -------------------------------------------------------------

class _Cache:
    """The engine target of the last command, valid until the inferior changes."""

    key: Optional[Tuple[Any, ...]] = None
    target: Optional[Target] = None
    generation = 0


def invalidate(*_event: Any) -> None:
    """Drop the cached target (the inferior ran, exited, loaded code or was written to)."""
    _Cache.generation += 1
    target, _Cache.target, _Cache.key = _Cache.target, None, None
    if target is not None:
        try:
            target.close()
        except Exception:  # pylint: disable=broad-except
            pass


def _core_path() -> Optional[str]:
    """The core file of the current inferior, from ``info files`` (gdb 13 has no API)."""
    try:
        text = gdb.execute("info files", to_string=True)
    except gdb.error:
        return None
    match = _CORE_FILE.search(text)
    return match.group(1) if match else None


def _connection_type(inferior: Any) -> Optional[str]:
    """``core``, ``native``, ``remote``, … or None without a connection."""
    connection = getattr(inferior, "connection", None)
    return getattr(connection, "type", None) if connection is not None else None


# -- `set heapwalk ...`: overrides for targets whose glibc heapwalk cannot find by itself -------

class _SetPrefix(gdb.Command):
    """Settings of heapwalk (overrides for the glibc state it looks for).

'show heapwalk' lists every setting with its value; 'help set heapwalk NAME' describes one."""

    def __init__(self, verb: str) -> None:
        self._verb = verb
        super().__init__("%s heapwalk" % verb, gdb.COMMAND_DATA, prefix=True)

    def invoke(self, argument: str, from_tty: bool) -> None:
        """``show heapwalk``: every setting and its value; ``set heapwalk``: the list."""
        if argument.strip():
            raise gdb.GdbError("heapwalk: no setting %r\nhint: 'show heapwalk' lists them"
                               % render.safe(argument.strip()))
        width = max(len(name) for name in _SETTINGS)
        if self._verb == "set":
            gdb.write("heapwalk settings ('set heapwalk NAME VALUE'; 'help set heapwalk NAME' "
                      "describes one):\n")
            for name, setting in _SETTINGS.items():
                gdb.write("  %-*s  %s\n" % (width, name, setting.summary))
            return
        for name, setting in _SETTINGS.items():
            gdb.write("heapwalk %-*s  %s\n" % (width + 1, name + ":", setting.shown()))


#: name -> (kind, one line, what "auto" / not set means, more help)
_SETTING_DOCS: Dict[str, Tuple[str, str, str, str]] = {
    "main-arena": (
        "string", "the address of glibc's main_arena",
        "auto (from glibc's symbols, else found in the memory image)",
        "A number or any gdb expression (e.g. &main_arena); evaluated when a command next "
        "reads the target. Empty (set heapwalk main-arena) returns to auto."),
    "mp": (
        "string", "the address of glibc's mp_ (malloc parameters)",
        "auto (from glibc's symbols, else found in the memory image)",
        "A number or any gdb expression (e.g. &mp_). Empty returns to auto."),
    "glibc": (
        "string", "the glibc version heapwalk assumes",
        "auto",
        "By default (auto) heapwalk reads the version from libc's banner, its file name or "
        "its version definitions, else from the malloc layout that fits the image. A "
        "version such as 2.31 forces that version's malloc layout (for a libc heapwalk cannot "
        "identify). 'set heapwalk glibc' with no value (or \"\") returns to auto."),
    "sysroot": (
        "string", "where the target's files (libc, debug symbols) are looked up",
        "auto (gdb's own sysroot)",
        "A directory: module paths of the core or process are looked up under it (cores "
        "from containers or other machines). Empty returns to gdb's sysroot."),
    "no-symbols": (
        "boolean", "whether heapwalk ignores every file on disk",
        "off",
        "When on, glibc's state is found from the memory image alone (no libc file, no "
        "debug symbols)."),
    "color": (
        "boolean", "whether heapwalk colours its output",
        "on",
        "When on (the default), heapwalk colours states, sizes and headings as on a "
        "terminal, whenever gdb styles its own output (set style enabled; never in batch "
        "mode, nor with NO_COLOR set). Lines always fit gdb's width (set width)."),
}


class _Setting(gdb.Parameter):
    """A heapwalk setting; changing one drops the cached target."""

    def __init__(self, name: str) -> None:
        kind, line, auto, more = _SETTING_DOCS[name]
        self.name = name
        self.summary = line
        self.auto = auto
        self.__doc__ = more
        self.set_doc = "Set %s." % line
        self.show_doc = "Show %s." % line
        super().__init__("heapwalk " + name, gdb.COMMAND_DATA,
                         gdb.PARAM_BOOLEAN if kind == "boolean" else gdb.PARAM_STRING)

    def get_set_string(self) -> str:
        if self.name != "color":  # colour is only how the text looks
            invalidate()
        if isinstance(self.value, str):
            text = self.value.strip()
            if text in ('""', "''"):  # gdb keeps the quotes of `set heapwalk glibc ""`
                text = ""
            if text != self.value:
                self.value = text
            if not text:
                return "heapwalk %s: %s" % (self.name, self.shown())
        return ""

    def shown(self) -> str:
        """The value as ``show`` prints it: the setting, or what auto means now."""
        value = self.value
        if isinstance(value, bool):
            return "on" if value else "off"
        if value:
            if self.name == "glibc":
                return "%s (forced; detection is off)" % render.safe(value)
            return render.safe(value)
        if self.name == "glibc":
            detected = _detected_glibc()
            return "auto (detected %s)" % detected if detected else "auto"
        return self.auto

    def get_show_string(self, svalue: str) -> str:
        return self.shown()


_SETTINGS: Dict[str, Any] = {}


def _detected_glibc() -> Optional[str]:
    """The glibc version of the open target, with how it was found; None without one."""
    if not (_SETTINGS.get("glibc") is None or not _SETTINGS["glibc"].value):
        return None
    try:
        inferior = gdb.selected_inferior()
        target = _Cache.target
        if target is None or target.closed:
            if _connection_type(inferior) != "core":  # opening a live process copies it
                return None
            target = current_target()
        glibc = target.arenas().get("glibc") or {}
    except Exception:  # pylint: disable=broad-except  # cosmetic: no target, unreadable core
        return None
    version = glibc.get("version")
    if not version:
        return None
    source = glibc.get("version_source")
    return "%s, from %s" % (render.safe(version), render.safe(source)) if source \
        else render.safe(version)


def _forced_glibc() -> Optional[str]:
    """The version `set heapwalk glibc` forces, or None (auto)."""
    setting = _SETTINGS.get("glibc")
    return setting.value if setting is not None and setting.value else None


def _unforced_version(target: Target) -> Optional[str]:
    """The glibc version heapwalk detects for ``target`` when nothing is forced."""
    if target.kind == "core":
        core = _core_path()
        if core is None:
            return None
        overrides = dict(_overrides())
        overrides.pop("glibc_version", None)
        try:
            with heapwalk.open_core(core, sysroot=_sysroot(), overrides=overrides) as probe:
                return (probe.arenas().get("glibc") or {}).get("version") or None
        except Exception:  # pylint: disable=broad-except  # cosmetic: the note is left out
            return None
    return _gdb_glibc_version()  # a live process: gdb's own symbols, if it has them


def _forced_note(target: Target, forced: str) -> Optional[str]:
    """Once per target: "detected 2.36, you forced 2.17" when they differ."""
    if getattr(target, "forced_glibc_noted", None) == forced:
        return None
    target.forced_glibc_noted = forced  # type: ignore[attr-defined]
    detected = _unforced_version(target)
    if not detected or detected == forced:
        return None
    return ("heapwalk: detected glibc %s, you forced %s (its malloc layout is what heapwalk "
            "reads); 'set heapwalk glibc' with no value returns to auto"
            % (render.safe(detected), render.safe(forced)))


_MISALIGNED = re.compile(r"^(?:\x1b\[[0-9;]*m)?(error|warning):(?:\x1b\[[0-9;]*m)? misaligned\b")


def _condense_misaligned(text: str, forced: str) -> str:
    """Under a forced glibc version, many `misaligned` warnings become one summary line."""
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines) if _MISALIGNED.match(line)]
    if len(hits) < 2:
        return text
    first = _MISALIGNED.match(lines[hits[0]])
    summary = ("%s: misaligned: %d misaligned chunk pointers under the forced glibc %s layout "
               "(first %s); --json lists every one"
               % (first.group(1) if first else "error", len(hits), render.safe(forced),
                  _MISALIGNED.sub("", lines[hits[0]]).lstrip()))
    drop = set(hits[1:])
    lines[hits[0]] = summary
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


def _register_settings() -> None:
    if _SETTINGS:
        return
    _SetPrefix("set")
    _SetPrefix("show")
    for name in _SETTING_DOCS:
        _SETTINGS[name] = _Setting(name)
    _SETTINGS["color"].value = True


def _overrides() -> Dict[str, Any]:
    """The engine overrides from `set heapwalk ...`."""
    out: Dict[str, Any] = {}
    for key, name in (("main_arena", "main-arena"), ("mp_", "mp")):
        text = _SETTINGS[name].value if name in _SETTINGS else None
        if text:
            try:
                out[key] = registry.parse_int(text)
            except UsageError:
                value = _gdb_address(text)
                if value is None:
                    raise UsageError("set heapwalk %s: cannot evaluate %r" % (name, text))
                out[key] = value
    if "glibc" in _SETTINGS and _SETTINGS["glibc"].value:
        out["glibc_version"] = _SETTINGS["glibc"].value
    if "no-symbols" in _SETTINGS and _SETTINGS["no-symbols"].value:
        out["no_files"] = True
    return out


def _sysroot() -> Optional[str]:
    """`set heapwalk sysroot`, else gdb's sysroot when it names a local directory."""
    if "sysroot" in _SETTINGS and _SETTINGS["sysroot"].value:
        return _SETTINGS["sysroot"].value
    try:
        value = gdb.parameter("sysroot")
    except (gdb.error, RuntimeError):
        return None
    if not value or value.startswith("target:") or value.startswith("remote:"):
        return None
    return value


def _as_int(value: Any) -> int:
    """A gdb value (pointer or integer) as an unsigned Python int."""
    return int(value.cast(gdb.lookup_type("unsigned long")))


def live_inferior() -> Optional[Dict[str, Any]]:
    """The selected inferior when it is a live native process: its pid and threads."""
    inferior = gdb.selected_inferior()
    if inferior.pid <= 0 or _core_path() is not None:
        return None
    return {"pid": inferior.pid, "threads": _thread_info(False)}


def _thread_info(with_tls_vars: bool) -> List[Dict[str, Any]]:
    """Each thread's LWP and fs_base (and tcache/thread_arena values if asked).

    Switches to every thread to read its registers and restores the user's selection.
    Threads whose registers cannot be read (running in non-stop mode) are left out.
    """
    inferior = gdb.selected_inferior()
    selected_thread = gdb.selected_thread()
    try:
        selected_frame = gdb.selected_frame()
    except gdb.error:
        selected_frame = None
    threads: List[Dict[str, Any]] = []
    try:
        for thread in sorted(inferior.threads(), key=lambda t: t.num):
            lwp = thread.ptid[1] or thread.ptid[2] or thread.ptid[0]
            try:
                thread.switch()
                fs_base = _as_int(gdb.selected_frame().read_register("fs_base"))
            except (gdb.error, ValueError):
                continue
            entry: Dict[str, Any] = {"lwp": lwp, "fs_base": fs_base}
            regs = _registers()
            if regs is not None:
                entry["regs"] = regs
                entry["rsp"] = regs[19]
            if with_tls_vars:
                for key, symbol in (("tcache", "tcache"), ("arena", "thread_arena")):
                    try:
                        entry[key] = _as_int(gdb.parse_and_eval(symbol))
                    except (gdb.error, RuntimeError):
                        entry[key] = None
            threads.append(entry)
    finally:
        if selected_thread is not None and selected_thread.is_valid():
            selected_thread.switch()
            if selected_frame is not None and selected_frame.is_valid():
                selected_frame.select()
    return threads


#: user_regs_struct order (sys/user.h), as the engine's reachability roots expect them.
_USER_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
              "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
              "gs_base", "ds", "es", "fs", "gs")


def _registers() -> Optional[List[int]]:
    """The selected thread's general registers (0 for those gdb cannot read), or None."""
    frame = gdb.selected_frame()
    values: List[int] = []
    for name in _USER_REGS:
        try:
            values.append(_as_int(frame.read_register(name)) & 0xFFFFFFFFFFFFFFFF)
        except (gdb.error, ValueError):
            values.append(0)
    return values if any(values) else None


def _reader(inferior: Any) -> Callable[[int, int], Optional[bytes]]:
    """A memory read callback for ``open_callback``; None when gdb cannot read."""
    def read(address: int, size: int) -> Optional[bytes]:
        try:
            return inferior.read_memory(address, size).tobytes()
        except (gdb.MemoryError, gdb.error, OverflowError, ValueError):
            return None
    return read


def _gdb_address(expression: str) -> Optional[int]:
    """The value of ``expression`` as an address, or None when gdb cannot evaluate it."""
    try:
        return int(gdb.parse_and_eval(expression).cast(
            gdb.lookup_type("unsigned long")))
    except (gdb.error, RuntimeError, ValueError):
        return None


def _gdb_glibc_version() -> Optional[str]:
    """glibc's version string from its debug symbols (``__libc_version``), if gdb has them."""
    try:
        text = gdb.parse_and_eval("__libc_version").string()
    except (gdb.error, RuntimeError, ValueError, UnicodeDecodeError):
        return None
    match = re.match(r"(\d+\.\d+)", text)
    return match.group(1) if match else None


def _callback_overrides() -> Dict[str, Any]:
    """What gdb's own symbol lookup knows: the engine has no module list through a callback."""
    overrides: Dict[str, Any] = _overrides()
    for key, expression in (("main_arena", "&main_arena"), ("mp_", "&mp_"),
                            ("tcache_key", "tcache_key")):
        if key in overrides:  # `set heapwalk ...` wins over gdb's symbols
            continue
        value = _gdb_address(expression)
        if value is not None:
            overrides[key] = value
    return overrides


def _open_callback(inferior: Any, label: str) -> Target:
    """Open the inferior through gdb's memory reads (gdbserver and other targets)."""
    handle = heapwalk.native().open_callback(_reader(inferior), _thread_info(True),
                                             _callback_overrides() or None,
                                             _gdb_glibc_version())
    return Target(handle, label, "callback")


def _select() -> Tuple[Tuple[Any, ...], Callable[[], Target]]:
    """The cache key and an opener for the selected inferior's target."""
    inferior = gdb.selected_inferior()
    kind = _connection_type(inferior)
    if kind == "core":
        core = _core_path()
        if core is not None:
            key = (inferior.num, "core", core, _Cache.generation)
            return key, lambda: heapwalk.open_core(core, sysroot=_sysroot(),
                                                           overrides=_overrides())
        # A core gdb opened but whose path we cannot learn: read it through gdb.
        key = (inferior.num, "core", None, _Cache.generation)
        return key, lambda: _open_callback(inferior, "core file")
    if kind is None or inferior.pid <= 0:
        raise NoTargetError("no process or core file",
                            hint="load a core with 'core-file CORE', or 'run' / "
                                 "'attach PID' first")
    pid = inferior.pid
    if kind == "native":
        key = (inferior.num, "live", pid, _Cache.generation)

        def open_live() -> Target:
            native = heapwalk.native()
            try:
                from .cmd_watch import root_of  # pylint: disable=import-outside-toplevel
                sysroot = _sysroot() or root_of(pid)  # a container's files: through its root
                handle = native.attach(pid, _thread_info(False), _overrides() or None, sysroot)
                return Target(handle, "pid %d" % pid, "live")
            except (OSError, native.FormatError):
                # /proc/PID/mem or maps unreadable (another pid namespace, permissions):
                # read through gdb instead.
                return _open_callback(inferior, "pid %d" % pid)
        return key, open_live
    key = (inferior.num, kind or "process", pid, _Cache.generation)
    return key, lambda: _open_callback(inferior, "%s process %d" % (kind or "remote", pid))


def current_target() -> Target:
    """The engine target for the selected inferior (cached until it runs again)."""
    key, opener = _select()
    if _Cache.target is not None and _Cache.key == key and not _Cache.target.closed:
        return _Cache.target
    invalidate()
    target = opener()
    # Progress and Ctrl-C for engine reads of a core or /proc (never for callback targets: their
    # reads go through gdb's API, which only the main thread may use).
    if target.kind in ("core", "live") and sys.stderr.isatty():
        target.progress_sink = lambda text: gdb.write(text, gdb.STDERR)  # progress.run: safe
    _Cache.key, _Cache.target = (key[:-1] + (_Cache.generation,)), target
    return target


# -- arguments ---------------------------------------------------------------------------------

def evaluate(text: str) -> int:
    """An ADDR/ARENA/THREAD argument: a number, or any gdb expression (``$rax+8``)."""
    try:
        return registry.parse_int(text)
    except UsageError:
        pass
    try:
        value = gdb.parse_and_eval(text)
        if value.type.strip_typedefs().code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
            if value.address is None:
                raise UsageError("not an address: %s" % text)
            value = value.address
        result = _as_int(value)
    except gdb.error as exc:
        raise UsageError(str(exc), subject=text) from None
    return result


def _split_expression(parser: Any, argv: List[str]) -> List[str]:
    """Let the one positional of a command be an expression with spaces (``$rax + 8``).

    Options (exact option strings and their values) are kept; the remaining words are
    joined into one argument when the command takes exactly one positional.
    """
    positionals = [a for a in parser._actions if not a.option_strings]  # pylint: disable=W0212
    if len(positionals) != 1:
        return argv
    takes_value = {s: a.nargs != 0 for a in parser._actions  # pylint: disable=W0212
                   for s in a.option_strings}
    options: List[str] = []
    words: List[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        name = word.split("=", 1)[0]
        if name in takes_value:
            options.append(word)
            if takes_value[name] and "=" not in word and i + 1 < len(argv):
                options.append(argv[i + 1])
                i += 1
        else:
            words.append(word)
        i += 1
    return options + ([" ".join(words)] if words else [])


# -- output ------------------------------------------------------------------------------------

def _style() -> Style:
    """Colour when gdb styling is on (gdb turns it off in batch mode), stdout is a tty and
    ``set heapwalk color`` is on; lines fit gdb's ``width``."""
    try:
        enabled = bool(gdb.parameter("style enabled"))
    except (gdb.error, RuntimeError):
        enabled = False
    if os.environ.get("NO_COLOR"):
        enabled = False
    setting = _SETTINGS.get("color")
    if setting is not None and not setting.value:
        enabled = False
    try:
        width = termwidth.gdb_width(gdb.parameter("width"))
    except (gdb.error, RuntimeError):
        width = None
    return Style(enabled and os.isatty(1), width)


def _set_status(status: int) -> None:
    """``$heapwalk_status``: the exit status the CLI would give for the last command."""
    try:
        gdb.set_convenience_variable("heapwalk_status", int(status))
    except Exception:  # pylint: disable=broad-except  # old gdb: no convenience variables API
        pass


#: The hint for an address `set heapwalk main-arena|mp` gives that holds nothing.
_OVERRIDE_HINT = ("'set heapwalk %s' with no value returns to auto (glibc's symbols, else a "
                  "search of the memory image); 'info symbol ADDR' checks "
                  "an address ('p &main_arena', 'p &mp_' find the real ones)")


def _gdb_error(exc: BaseException, subject: Optional[str]) -> "gdb.GdbError":
    """One ``heapwalk: …`` line plus a hint, as a GdbError (gdb prints no traceback)."""
    try:
        native_error = heapwalk.native().Error
    except HeapwalkError:
        native_error = None
    known = isinstance(exc, (HeapwalkError, OSError)) or (
        native_error is not None and isinstance(exc, native_error))
    if out_of_memory(exc) is not None:
        exc = out_of_memory(exc)  # type: ignore[assignment]
    elif not known:
        exc = HeapwalkError("internal error: %s: %s" % (type(exc).__name__, exc),
                            hint="please report this; HEAPWALK_DEBUG=1 shows the traceback")
    line, hint = describe_error(exc, subject, native_error)
    return gdb.GdbError(line + ("\nhint: %s" % hint if hint else ""))


# -- commands ----------------------------------------------------------------------------------

def _listing() -> str:
    """The subcommand list printed by ``heapwalk`` alone."""
    width = max(len(name) for name in registry.COMMANDS)
    lines = ["heapwalk: walk glibc malloc arenas of the current core file or process.", "",
             "commands:"]
    lines += ["  %-*s  %s" % (width, c.name, c.summary) for c in registry.COMMANDS.values()]
    lines += ["", "Every command takes --json. 'help heapwalk COMMAND' or "
                  "'heapwalk COMMAND --help' describes one."]
    return "\n".join(lines) + "\n"


class HeapwalkPrefix(gdb.Command):
    """Walk glibc malloc arenas of the current core file or process.

Commands mirror the CLI (python3 -m heapwalk); every command takes --json.
'heapwalk' alone lists the commands."""

    def __init__(self) -> None:
        super().__init__(PREFIX, gdb.COMMAND_DATA, gdb.COMPLETE_COMMAND, True)

    def invoke(self, argument: str, from_tty: bool) -> None:
        """``heapwalk`` alone: list the commands."""
        words = gdb.string_to_argv(argument)
        if words == ["--version"]:
            gdb.write("heapwalk %s\n" % heapwalk.__version__)
            return
        if words:
            raise gdb.GdbError("heapwalk: unknown command '%s'\nhint: 'heapwalk' lists the "
                               "commands" % render.safe(words[0]))
        gdb.write(_listing())


def _thread_hooks(inv: Invocation) -> None:
    """Issue 15: ``try_free`` frees on gdb's selected thread; ``chunk`` names gdb's thread
    numbers next to LWPs."""
    try:
        selected = gdb.selected_thread()
        setattr(inv, "default_lwp", selected.ptid[1] if selected is not None else None)
    except gdb.error:
        pass

    def thread_of(lwp: int) -> Optional[int]:
        try:
            return next((t.num for t in gdb.selected_inferior().threads() if t.ptid[1] == lwp),
                        None)
        except gdb.error:
            return None
    setattr(inv, "gdb_thread_of", thread_of)


class HeapwalkCommand(gdb.Command):
    """A ``heapwalk <name>`` subcommand built from a registry entry."""

    def __init__(self, command: Command) -> None:
        self._command = command
        self._parser = registry.build_parser(command, "%s %s" % (PREFIX, command.name))
        super().__init__("%s %s" % (PREFIX, command.name), gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        """Parse, run against the current target, print; errors become one line.

        ``$heapwalk_status`` is left holding the CLI's exit status for the same run (0, 1 when
        the result is incomplete or may be wrong or nothing could be analysed, 2 usage error),
        for scripts that drive gdb in batch mode."""
        _set_status(1)
        try:
            argv = _split_expression(self._parser, gdb.string_to_argv(argument))
            args = self._parser.parse_args(argv)
        except ParserExit as exc:
            _set_status(exc.status)
            if exc.message:
                gdb.write(exc.message, gdb.STDERR)
            return
        except UsageError as exc:
            _set_status(2)
            raise _gdb_error(exc, None) from None
        self.dont_repeat()
        subject: Optional[str] = None
        try:
            target = current_target() if getattr(self._command, "needs_target", True) else None
            subject = target.label if target is not None else None
            if self._command.name == "tcache":
                _gdb_thread(args)
            inv = Invocation(target, args, evaluate, _style())
            _thread_hooks(inv)
            output = registry.execute(self._command, inv)
        except gdb.GdbError:
            raise
        except KeyboardInterrupt:
            raise
        except UsageError as exc:
            _set_status(2)
            raise _gdb_error(exc, subject) from None
        except Exception as exc:  # pylint: disable=broad-except
            if os.environ.get("HEAPWALK_DEBUG"):
                raise
            try:
                given = _overrides()
            except UsageError:
                given = {}
            raise _gdb_error(override_fault(exc, given, _OVERRIDE_HINT) or exc,
                             subject) from None
        _set_status(output.status)
        text = output.text
        forced = _forced_glibc()
        if forced and target is not None:
            note = _forced_note(target, forced)
            if note:
                gdb.write(note + "\n", gdb.STDERR)
            if not getattr(args, "json", False):
                text = _condense_misaligned(text, forced)
        gdb.write(text)

    def _positional_choices(self, text: str) -> Optional[List[str]]:
        """What the word being completed can be: gdb's thread numbers (tcache THREAD),
        arena indices (ARENA, --arena), LWPs (--lwp); None for anything else."""
        words = text.split()
        if text and not text[-1].isspace():
            words = words[:-1]
        previous = words[-1] if words else ""
        if previous == "--lwp":
            return [str(lwp) for _, lwp in _gdb_threads()]
        if previous == "--arena":
            return _arena_indices()
        if previous.startswith("-") and previous not in _FLAGS:
            return None
        if self._command.name == "tcache":
            return [str(num) for num, _ in _gdb_threads()]
        if any(a.dest == "arena" and not a.option_strings
               for a in self._parser._actions):  # pylint: disable=W0212
            return _arena_indices()
        return None

    def complete(self, text: str, word: Optional[str]) -> Any:
        """Complete option names; positional words complete as gdb expressions.

        gdb breaks words at '-', so ``word`` may be only the tail of ``--fr``: match on the
        whole token and return completions that start where ``word`` starts.
        """
        word = word or ""
        token = "" if not text or text[-1].isspace() else text.split()[-1]
        options = sorted(s for a in self._parser._actions  # pylint: disable=W0212
                         for s in a.option_strings if s.startswith("--"))
        if not token or token.isdigit():
            try:
                choices = self._positional_choices(text)
            except Exception:  # pylint: disable=broad-except  # completion never fails
                choices = None
            if choices is not None:
                found = [c for c in choices if c.startswith(word)]
                value_of = text.split()[-1:] in (["--lwp"], ["--arena"]) and not token
                return found if token or value_of else found + options
        if token.startswith("-") or not token:
            cut = len(token) - len(word)
            if not token.endswith(word) or cut < 0:
                return []
            return [o[cut:] for o in options if o.startswith(token)]
        if self._command.completes_expressions:
            return gdb.COMPLETE_EXPRESSION
        return []


#: Options that take no value (the word after one is a positional).
_FLAGS = frozenset(("--json", "-v", "--verbose", "--all", "--free", "--used", "--largest",
                    "--per-arena", "--detail", "--anon-roots", "--no-classes"))


def _gdb_threads() -> List[Tuple[int, int]]:
    """(gdb's thread number, LWP) of every thread of the selected inferior, in gdb's order."""
    out = []
    for thread in gdb.selected_inferior().threads():
        ptid = thread.ptid
        out.append((int(thread.num), int(ptid[1] or ptid[0])))
    return sorted(out)


def _gdb_thread(args: Any) -> None:
    """``heapwalk tcache``: THREAD is gdb's thread number, turned into the LWP the engine
    knows; without THREAD, --lwp or --all, the selected thread (as pwndbg's tcachebins)."""
    if getattr(args, "all", False) or getattr(args, "lwp", None) is not None:
        return
    threads = dict(_gdb_threads())
    if args.thread is not None:
        number = evaluate(args.thread)
        if number not in threads:
            raise UsageError("no thread %d" % number, subject=args.thread,
                             hint="'info threads' lists gdb's thread numbers; --lwp N names "
                                  "a thread by its LWP, --all shows every thread")
        args.lwp, args.thread = str(threads[number]), None
        return
    selected = gdb.selected_thread()
    if selected is not None and selected.is_valid():
        ptid = selected.ptid
        args.lwp = str(int(ptid[1] or ptid[0]))


def _arena_indices() -> List[str]:
    """Arena indices of the open target (a core is opened; a live one only when cached)."""
    target = _Cache.target
    if target is None or target.closed:
        if _connection_type(gdb.selected_inferior()) != "core":
            return []
        target = current_target()
    return [str(i) for i in sorted(set(target.arena_index().values()))]


def _doc(command: Command) -> str:
    """gdb help for a subcommand: summary line, then the parser's help."""
    parser = registry.build_parser(command, "%s %s" % (PREFIX, command.name))
    return "%s.\n\n%s" % (command.summary[0].upper() + command.summary[1:],
                          parser.format_help().rstrip())


_EVENTS = ("cont", "exited", "new_objfile", "memory_changed", "inferior_call")


def register() -> None:
    """Register the ``heapwalk`` prefix and its subcommands; connect cache invalidation."""
    HeapwalkPrefix()
    _register_settings()
    for command in registry.COMMANDS.values():
        cls = type("Heapwalk_%s" % command.name, (HeapwalkCommand,),
                   {"__doc__": _doc(command)})
        cls(command)
    for name in _EVENTS:
        registry_event = getattr(gdb.events, name, None)
        if registry_event is None:
            continue
        try:
            registry_event.disconnect(invalidate)
        except Exception:  # pylint: disable=broad-except
            pass
        registry_event.connect(invalidate)
