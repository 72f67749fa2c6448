"""The command-line front end: ``python3 -m heapwalk <command> (CORE | --pid PID) …``.

Exit status: 0 success, also with warnings (the result is complete and exact); 1 analysis
error (engine exception, unreadable input, or a result with an "error" diagnostic: incomplete or
possibly wrong); 2 usage error; 130 interrupted. Errors are one line
(``heapwalk: <subject>: <message>``) plus an optional hint line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import List, Optional, Sequence, TextIO

from . import commands as registry
from .commands import Invocation, Parser, ParserExit
from .errors import HeapwalkError, UsageError, describe_error, out_of_memory, override_fault
from .render import Style
from .target import Target

PROG = "heapwalk"
EPILOG = ("Exit status: 0 complete and exact result (warnings included), 1 the target could "
          "not be analysed or the result is incomplete or may be wrong (error diagnostics: "
          "corruption, truncation, unreadable structures), 2 usage error. 'heapwalk COMMAND "
          "--help' describes a command.")


def build_parser() -> Parser:
    """The CLI parser: one subparser per registered command, plus target options."""
    parser = Parser(prog=PROG, description="Walk glibc malloc arenas in an ELF core file "
                    "or a live process.", epilog=EPILOG)
    import heapwalk  # pylint: disable=import-outside-toplevel
    parser.add_argument("--version", action="version",
                        version="%s %s" % (PROG, heapwalk.__version__))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for command in registry.COMMANDS.values():
        p = sub.add_parser(command.name, help=command.summary,
                           description=command.description, epilog=EPILOG)
        # A command that reads files of its own names its first positional (trend: DIR).
        p.add_argument("core", nargs="?", metavar=getattr(command, "core_metavar", "CORE"),
                       help=getattr(command, "core_help",
                                    "an ELF core file (from gcore or the kernel)"))
        command.configure(p)
        target = p.add_argument_group("target")
        target.add_argument("--pid", type=registry.pid_type, metavar="PID",
                            help="analyse the live process PID instead of a core (it is "
                                 "stopped only while its heaps are copied, then analysed "
                                 "from the copy)")
        target.add_argument("--max-copy", metavar="SIZE", type=registry.parse_size,
                            help="with --pid: refuse to copy more than SIZE (e.g. 4G) of "
                                 "the process; default: what memory or the temporary "
                                 "directory holds")
        target.add_argument("--copy-to", choices=("auto", "memory", "file"), default="auto",
                            help="with --pid: keep the copy in heapwalk's memory or in an "
                                 "unnamed file under $TMPDIR; auto (default): memory when it "
                                 "fits in half of the available memory, else the file")
        if not any(a.dest == "java_heap" for a in p._actions):  # pylint: disable=protected-access
            target.add_argument("--java-heap", action="store_true",
                                help="with --pid: copy a JVM's Java heap too (no analysis "
                                     "reads it; it is left out by default)")
        target.add_argument("--sysroot", metavar="DIR",
                            help="look for the core's libraries under DIR (cores from "
                                 "containers or other machines)")
        target.add_argument("--no-symbols", action="store_true",
                            help="use no file from disk (libc, debug symbols): find glibc's "
                                 "state from the memory image alone")
        target.add_argument("--main-arena", metavar="ADDR", type=registry.parse_int,
                            help="address of glibc's main_arena (overrides symbols)")
        target.add_argument("--mp", metavar="ADDR", type=registry.parse_int,
                            help="address of glibc's mp_ (overrides symbols)")
        target.add_argument("--glibc", metavar="VERSION",
                            help="the target's glibc version, e.g. 2.31 (overrides detection)")
        registry.add_common(p)
        p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                       help="colour the text: auto (default: on a terminal, unless NO_COLOR "
                            "is set), always, never; lines fit $COLUMNS or the terminal")
    return parser


def _subparser(parser: Parser, name: str) -> argparse.ArgumentParser:
    """The subparser of command ``name``."""
    for action in parser._actions:  # pylint: disable=protected-access
        if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
            return action.choices[name]
    raise KeyError(name)


def _fix_positionals(parser: Parser, args: argparse.Namespace) -> None:
    """Resolve CORE vs --pid: with --pid, a word argparse took as CORE is the command's.

    ``heapwalk bins --pid 42 1`` parses "1" as CORE (the first positional); shift it into
    the command's optional positionals when there is room, otherwise it is an error.
    """
    sub = _subparser(parser, args.command)
    own = [a.dest for a in sub._actions  # pylint: disable=protected-access
           if not a.option_strings and a.dest != "core"]
    if getattr(registry.COMMANDS[args.command], "own_target", False):
        if args.core is not None:  # watch takes no CORE
            sub.error("unexpected argument %r (watch --pid PID or --cgroup PATH)" % args.core)
        return
    if args.pid is None:
        if args.core is None:
            # `heapwalk chunk CORE`: argparse put CORE into ADDR; name what is missing.
            for action in sub._actions:  # pylint: disable=protected-access
                value = getattr(args, action.dest, None)
                if action.option_strings or action.dest == "core" or action.nargs is not None \
                        or not isinstance(value, str):
                    continue
                if os.path.exists(value) or not _is_number(value):
                    sub.error("the following arguments are required: %s"
                              % (action.metavar or action.dest.upper()))
            sub.error(getattr(registry.COMMANDS[args.command], "missing_core",
                              "give a CORE file or --pid PID"))
        # `heapwalk bins 1 CORE`: accept the core after the command's own argument.
        if not os.path.exists(args.core):
            for dest in own:
                value = getattr(args, dest)
                if isinstance(value, str) and os.path.isfile(value):
                    args.core, value = value, args.core
                    setattr(args, dest, value)
                    break
        return
    if args.core is None:
        return
    values = [args.core] + [getattr(args, dest) for dest in own]
    if not own or values[-1] is not None:
        sub.error("give either CORE or --pid, not both")
    args.core = None
    for dest, value in zip(own, values):
        setattr(args, dest, value)


def _is_number(text: str) -> bool:
    """True when ``text`` reads as an ADDR/ARENA number (0x hex or decimal)."""
    try:
        registry.parse_int(text)
    except UsageError:
        return False
    return True


def open_target(args: argparse.Namespace) -> Target:
    """Open the core or attach to the pid named by ``args``."""
    import heapwalk  # pylint: disable=import-outside-toplevel
    overrides = {key: value for key, value in (
        ("main_arena", args.main_arena), ("mp_", args.mp), ("glibc_version", args.glibc),
        ("no_files", True if args.no_symbols else None)) if value is not None}
    if args.pid is not None:
        from .cmd_watch import root_of  # pylint: disable=import-outside-toplevel
        found = None if args.sysroot else root_of(args.pid)  # a container's files: its root
        target = heapwalk.attach(args.pid, overrides=overrides, sysroot=args.sysroot or found,
                               java_heap=bool(getattr(args, "java_heap", False)),
                               max_copy=getattr(args, "max_copy", None),
                               store=getattr(args, "copy_to", "auto"))
        if args.sysroot or found:
            target.sysroot_info = {"sysroot": args.sysroot or found,
                                   "sysroot_source": "--sysroot" if args.sysroot else
                                   "the process's root (/proc/PID/root): it runs in another "
                                   "mount namespace or chroot"}
        return target
    if not os.path.exists(args.core):
        raise HeapwalkError("no such file", subject=args.core)
    if os.path.isdir(args.core):
        raise HeapwalkError("is a directory, not a core file", subject=args.core)
    return heapwalk.open_core(args.core, sysroot=args.sysroot, overrides=overrides)


def _native_error() -> Optional[type]:
    """``_native.Error`` if the engine is loaded (or loadable), else None."""
    import heapwalk  # pylint: disable=import-outside-toplevel
    try:
        return heapwalk.native().Error
    except HeapwalkError:
        return None


def _report(exc: BaseException, subject: Optional[str], live: bool, err: TextIO) -> None:
    """Print ``exc`` as one line plus a hint."""
    line, hint = describe_error(exc, subject, _native_error(), live)
    err.write(line + "\n")
    if hint:
        err.write("hint: %s\n" % hint)


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    """Parse ``argv``, run the command, print to ``out``/``err``; return the exit status."""
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out):  # --help goes to `out`
            args, extra = parser.parse_known_args(list(argv))
        if extra:  # the command's usage, not the top-level one (`arenas CORE --bogus`)
            _subparser(parser, args.command).error(
                "unrecognized arguments: %s" % " ".join(extra))
        _fix_positionals(parser, args)
    except ParserExit as exc:
        if exc.message:
            err.write(exc.message)
        return exc.status
    except UsageError as exc:
        err.write(getattr(exc, "usage", ""))
        _report(exc, None, False, err)
        return 2

    subject = "pid %d" % args.pid if args.pid is not None else args.core
    live = args.pid is not None
    command = registry.COMMANDS[args.command]
    style = Style(False) if args.json else Style.for_stream(out, getattr(args, "color", "auto"))
    target: Optional[Target] = None
    try:
        if getattr(command, "needs_target", True):  # diff reads its own two files
            target = open_target(args)
        if target is not None and hasattr(err, "isatty") and err.isatty():  # a progress line on a terminal only
            target.progress_sink = lambda text: (err.write(text), err.flush())
        output = registry.execute(command, Invocation(target, args, style=style),  # type: ignore[arg-type]
                                  stream=True)
        if output.pieces is not None:  # a streamed listing (chunks, bins --json)
            for piece in output.pieces:
                out.write(piece)
            out.flush()
            return command.status(output.document)
        out.write(output.text)
        out.flush()
        return output.status
    except UsageError as exc:
        _report(exc, None, False, err)
        return 2
    except Exception as exc:  # pylint: disable=broad-except
        if os.environ.get("HEAPWALK_DEBUG"):
            raise
        error_class = _native_error()
        known = isinstance(exc, (HeapwalkError, OSError)) or (
            error_class is not None and isinstance(exc, error_class))
        fault = override_fault(exc, {"main_arena": getattr(args, "main_arena", None),
                                     "mp_": getattr(args, "mp", None)},
                               "leave out --%s: heapwalk finds it from glibc's symbols, else "
                               "by searching the memory image")
        if fault is not None:
            exc = fault
        if out_of_memory(exc) is not None:
            exc = out_of_memory(exc)  # type: ignore[assignment]
        elif not known:
            exc = HeapwalkError("internal error: %s: %s" % (type(exc).__name__, exc),
                                hint="please report this; HEAPWALK_DEBUG=1 shows the "
                                     "traceback")
        _report(exc, subject, live, err)
        return 1
    finally:
        if target is not None:
            try:
                target.close()
            except Exception:  # pylint: disable=broad-except
                pass


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python3 -m heapwalk`` and the installed launcher."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        return run(argv, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): exit quietly, and keep Python from
        # complaining when it flushes stdout at shutdown.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
