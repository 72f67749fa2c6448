"""The command registry shared by the CLI and gdb.

Each command is defined once: its argparse arguments (help text comes from the parser), how
it queries a :class:`~heapwalk.target.Target` into a JSON document, and how that document is
rendered as text. Front ends (``cli.py``, ``gdbcmd.py``) only build parsers from the registry,
pick a target and an expression evaluator, and print :class:`Output`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, NoReturn, Optional

from . import cmd_alloc, cmd_tcmalloc, render, streamed, termwidth
from .errors import NotFoundError, UsageError
from .render import Style
from .target import Target

Record = Dict[str, Any]
#: Turns an ADDR/ARENA/THREAD argument into an int (gdb evaluates any expression).
Evaluator = Callable[[str], int]

#: Text output of ``chunks`` shows this many chunks unless ``--limit`` is given.
DEFAULT_TEXT_LIMIT = 100
#: Chunks a streamed listing (``chunks --json``, ``bins --json``) holds at a time.
STREAM_BATCH = 16384
#: The engine treats smaller ARENA values as ring indices, larger ones as addresses.
MAX_ARENA_INDEX = 4096


class ParserExit(Exception):
    """argparse wanted to exit (``--help``); carries the status and message."""

    def __init__(self, status: int, message: Optional[str]) -> None:
        super().__init__(message or "")
        self.status = status
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so gdb can survive ``--help``."""

    def error(self, message: str) -> NoReturn:
        words = self.prog.split(None, 1)
        exc = UsageError(message, subject=words[1] if len(words) > 1 else None,
                         hint="try '%s --help'" % self.prog)
        exc.usage = self.format_usage()  # type: ignore[attr-defined]
        raise exc

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        raise ParserExit(status, message)


def parse_int(text: str) -> int:
    """Parse a non-negative integer: ``0x`` hex or decimal (``0010`` is decimal)."""
    stripped = text.strip().replace("_", "")
    try:
        if stripped.lower().startswith("0x"):
            value = int(stripped[2:], 16)
        else:
            value = int(stripped, 10)
    except ValueError:
        raise UsageError("not a number (use 0x… hex or decimal): %r" % text) from None
    if value < 0:
        raise UsageError("must not be negative: %r" % text)
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
               "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
               "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """Parse a byte count: ``4G``, ``512M``, ``100k`` (powers of 1024) or plain bytes."""
    stripped = text.strip().replace("_", "").lower()
    digits = stripped.rstrip("kmgtib")
    unit = stripped[len(digits):]
    try:
        value = float(digits)
    except ValueError:
        raise UsageError("not a size (e.g. 4G, 512M, 1048576): %r" % text) from None
    if unit not in _SIZE_UNITS or value <= 0:
        raise UsageError("not a size (e.g. 4G, 512M, 1048576): %r" % text)
    return int(value * _SIZE_UNITS[unit])


def _limit(text: str) -> int:
    """argparse type for ``--limit`` (0 = no limit)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more: %r" % text)
    return value


def non_negative(text: str) -> int:
    """argparse type for counts such as ``--top`` (a negative one is a usage error, exit 2)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more: %r" % text)
    return value


def pid_type(text: str) -> int:
    """argparse type for ``--pid``: a process id is a positive decimal number."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("not a process id: %r" % text) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a process id is a positive number: %r" % text)
    return value


@dataclass
class Invocation:
    """One run of a command: its target, parsed arguments, evaluator and style."""

    target: Target
    args: argparse.Namespace
    evaluate: Evaluator = parse_int
    style: Style = field(default_factory=Style)

    @property
    def json(self) -> bool:
        """True when ``--json`` was given."""
        return bool(getattr(self.args, "json", False))

    def names(self) -> Dict[int, str]:
        """Arena address -> ``#i`` labels for text output (cosmetic: empty on failure)."""
        try:
            index = self.target.arena_index()
        except Exception:  # pylint: disable=broad-except  # labels are optional
            return {}
        return {a: "#%d" % i for a, i in index.items()}


@dataclass
class Output:
    """What a command produced: text to print and an exit status."""

    text: str
    status: int
    document: Record
    #: A streamed JSON document (execute(stream=True)): write these instead of ``text``; the
    #: status is ``command.status(document)`` once they are written.
    pieces: Optional[Iterator[str]] = None


def problem_status(document: Mapping[str, Any]) -> int:
    """1 when the document carries an error diagnostic (the result is incomplete or may be
    wrong), else 0: notes and warnings leave a complete, exact result. The allocator sections
    (``jemalloc``, ``tcmalloc``: their models' own diagnostics) count too."""
    items = list(document.get("diagnostics", []))
    for key in ("jemalloc", "tcmalloc"):
        section = document.get(key)
        if isinstance(section, Mapping):
            items += section.get("diagnostics", [])
    return 1 if any(render.is_problem(d) for d in items) else 0


def set_severities(document: Any) -> None:
    """Give every diagnostic of ``document`` its ``severity`` (the engine sets it on its own;
    notes made in Python and reports saved by an older heapwalk lack it)."""
    items = document.get("diagnostics") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return
    kinds: Optional[Dict[str, str]] = None
    for d in items:
        if isinstance(d, dict) and "severity" not in d:
            if kinds is None:
                kinds = render.kind_severities()
            d["severity"] = render.severity(d, kinds)


class Command:
    """Base class: subclasses set ``name``/``summary``/``description`` and override hooks."""

    name = ""
    summary = ""
    description = ""
    #: gdb completion for positional words: "expression" or None.
    completes_expressions = False

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's own arguments (``--json`` is added by :func:`build_parser`)."""

    def collect(self, inv: Invocation) -> Record:
        """Query the target; return the JSON document."""
        raise NotImplementedError

    def render(self, document: Record, inv: Invocation) -> List[str]:
        """Text lines for ``document`` (diagnostics are appended by :func:`execute`)."""
        raise NotImplementedError

    def status(self, document: Record) -> int:
        """Exit status for ``document``."""
        return problem_status(document)


# -- argument helpers --------------------------------------------------------------------------

def resolve_arena(inv: Invocation, text: Optional[str]) -> Optional[int]:
    """Evaluate an ARENA argument (index or address) and check the target has it."""
    if text is None:
        return None
    value = inv.evaluate(text)
    known = inv.target.arena_index()
    if value < MAX_ARENA_INDEX:
        if value not in known.values():
            raise NotFoundError("no arena #%d (the target has %d)" % (value, len(known)),
                                hint="'heapwalk arenas' lists them")
    elif value not in known:
        raise NotFoundError("no arena at %s" % render.addr(value),
                            hint="'heapwalk arenas' lists them; ARENA is an index "
                                 "(0 = main) or an arena's address")
    return value


ARENA_HELP = "an arena: its index (0 = main_arena) or its address (0x… hex or decimal)"


# -- the commands ------------------------------------------------------------------------------

class Arenas(Command):
    """``arenas``: the per-arena accounting report."""

    name = "arenas"
    summary = "per-arena accounting: system bytes, in use, free lists, tcache, threads"
    description = ("Walk every arena (ring order from main_arena) and report what malloc_info "
                   "reports: system and max system bytes, heaps, in-use chunks, fastbins, "
                   "bins, top and tcache, plus threads, mmapped chunks and diagnostics. "
                   "--json prints the engine's report unchanged.")

    def collect(self, inv: Invocation) -> Record:
        document = inv.target.arenas()
        owner = [a for a in inv.target.allocators() if a.get("owns_malloc")]
        if owner and owner[0]["allocator"] == "jemalloc":
            # New fields only: glibc's arenas stay as they are (its main arena still exists).
            try:
                document = dict(document, allocator="jemalloc", jemalloc=inv.target.jemalloc())
            except RuntimeError as exc:  # the engine's Error: jemalloc's arenas were not found
                found = {"kind": "layout", "address": None, "arena": None, "detail": str(exc),
                         "severity": "error"}
                document = dict(document, allocator="jemalloc",
                                diagnostics=list(document.get("diagnostics", [])) + [found])
        return cmd_tcmalloc.with_tcmalloc(inv.target, document)

    def render(self, document: Record, inv: Invocation) -> List[str]:
        lines = (render.render_arenas(document, inv.style)
                 + cmd_tcmalloc.render_tcmalloc(document.get("tcmalloc"), inv.style))
        if "jemalloc" in document:
            from .render_jemalloc import render_jemalloc  # noqa: PLC0415

            lines = render_jemalloc(document["jemalloc"], inv.style) + ["", "glibc:"] + lines
        return lines


class Heaps(Command):
    """``heaps``: each arena's heaps (heap_info chain; the sbrk heap for main)."""

    name = "heaps"
    summary = "each arena's heaps: address, size, mprotect size"
    description = ("List the heaps of every arena (the heap_info chain of non-main arenas, "
                   "64 MiB-aligned) with their size and mprotect size.")

    def collect(self, inv: Invocation) -> Record:
        report = inv.target.arenas()
        arenas = [{"index": a.get("index", i), "address": a.get("address"),
                   "main": a.get("main", False), "heaps": a.get("heaps", [])}
                  for i, a in enumerate(report.get("arenas", []))]
        return render.wrap(self.name, {"arenas": arenas,
                                       "diagnostics": report.get("diagnostics", [])})

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render.render_heaps(document, inv.style)


def add_show(parser: argparse.ArgumentParser) -> None:
    """``--show N``: chunk addresses per free list in the text (issue 15: the rest of ``… +N``)."""
    parser.add_argument("--show", metavar="N", type=_show_count, default=render.BIN_PREVIEW,
                        help="chunk addresses shown per list in the text (default %d; 'all' or "
                             "0: every one; --json always lists every one)" % render.BIN_PREVIEW)


def _show_count(text: str) -> int:
    """argparse type for ``--show``: a count, 0 or ``all`` for every one."""
    return 0 if text == "all" else _limit(text)


class Bins(Command):
    """``bins [ARENA]``: free lists of one or every arena."""

    name = "bins"
    summary = "non-empty fastbins and bins (unsorted, small, large) and top, per arena"
    description = ("Show the non-empty fastbins and bins and the top chunk of every arena, "
                   "or of ARENA, with counts, bytes and the first chunks of each list.")
    completes_expressions = True

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arena", nargs="?", metavar="ARENA", help=ARENA_HELP)
        add_show(parser)

    def collect(self, inv: Invocation) -> Record:
        arena = resolve_arena(inv, inv.args.arena)
        show = getattr(inv.args, "show", render.BIN_PREVIEW)
        inv.style.preview = show
        if not inv.json or not inv.target.streams:  # the text shows a few chunks of each list
            return render.wrap(self.name, inv.target.bins(arena, show or None))
        document = render.wrap(self.name, inv.target.bins(arena, 0))
        for a in document.get("arenas", []):
            for key, fast, encode in (("fastbins", True, streamed.encode_addresses),
                                      ("bins", False, streamed.encode_sized)):
                for position, entry in enumerate(a.get(key, [])):
                    entry["chunks"] = streamed.Stream(
                        inv.target.free_list_stream(a["address"], fast, position, STREAM_BATCH),
                        encode)
        return document

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render.render_bins(document, inv.style)


class Tcache(Command):
    """``tcache [THREAD]``: per-thread tcaches."""

    name = "tcache"
    summary = "each thread's tcache (or one thread's)"
    description = ("Show the tcache of THREAD, with the chunks cached in each size class. In "
                   "gdb THREAD is gdb's thread number ('info threads', $_thread) and without "
                   "one it is the selected thread; in the CLI THREAD is an LWP and without one "
                   "every thread is shown. --all shows every thread, --lwp N one by its LWP.")
    completes_expressions = True

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("thread", nargs="?", metavar="THREAD",
                            help="in gdb: gdb's thread number (as 'info threads' numbers them, "
                                 "$_thread); in the CLI: the thread's LWP")
        parser.add_argument("--lwp", metavar="LWP",
                            help="the thread whose LWP (kernel thread id) is LWP")
        parser.add_argument("--all", action="store_true",
                            help="every thread (the CLI's default; gdb's is the selected "
                                 "thread)")
        add_show(parser)

    def collect(self, inv: Invocation) -> Record:
        args = inv.args
        inv.style.preview = getattr(args, "show", render.BIN_PREVIEW)
        given = [w for w in (args.thread, getattr(args, "lwp", None)) if w is not None]
        if len(given) > 1 or (given and getattr(args, "all", False)):
            raise UsageError("give one of THREAD, --lwp LWP or --all")
        lwp = inv.evaluate(given[0]) if given else None
        if cmd_alloc.owner(inv.target):  # jemalloc's or tcmalloc's thread caches
            return cmd_alloc.tcache(inv.target, lwp)
        document = render.wrap(self.name, inv.target.tcache(lwp))
        if lwp is not None and not document.get("threads"):
            raise NotFoundError("no thread with LWP %d" % lwp,
                                hint="'heapwalk arenas' lists the threads")
        return document

    def render(self, document: Record, inv: Invocation) -> List[str]:
        if document.get("allocator") in cmd_alloc.ALLOCATORS:
            return cmd_alloc.render_tcache(document, getattr(inv, "gdb_thread_of", None), inv.style)
        return render.render_tcache(document, inv.names(), inv.style)


class Chunks(Command):
    """``chunks``: list chunks, filtered by arena and state."""

    name = "chunks"
    summary = "list chunks (address, size, state, arena)"
    description = ("List the chunks of every arena (or of --arena), in address order. "
                   "Text output stops after %d chunks unless --limit is given; JSON lists "
                   "all of them unless --limit is given." % DEFAULT_TEXT_LIMIT)
    #: (arena, state) of a streamed text listing, between collect() and stream_lines().
    _query: Any = (None, "all")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--arena", metavar="ARENA", help=ARENA_HELP)
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--free", dest="state", action="store_const", const="free",
                           help="only free chunks (tcache, fastbin, unsorted, small, large, "
                                "top)")
        group.add_argument("--used", dest="state", action="store_const", const="used",
                           help="only chunks in use (including mmapped chunks)")
        parser.add_argument("--limit", metavar="N", type=_limit,
                            help="show at most N chunks (0 = all; text default %d)"
                                 % DEFAULT_TEXT_LIMIT)

    def _limit(self, inv: Invocation) -> Optional[int]:
        limit = inv.args.limit
        if limit is None:
            return None if inv.json else DEFAULT_TEXT_LIMIT
        return limit or None

    def collect(self, inv: Invocation) -> Record:
        state = inv.args.state or "all"
        if inv.args.arena is None and cmd_alloc.owner(inv.target):
            # jemalloc or tcmalloc answers malloc: its allocations (--arena still names a glibc
            # arena).
            return cmd_alloc.chunks(inv.target, state, self._limit(inv), inv.json)
        arena = resolve_arena(inv, inv.args.arena)
        if not inv.target.streams or (not inv.json and self._limit(inv) is not None):
            return render.wrap(self.name, inv.target.chunks(arena, state, self._limit(inv)))
        if not inv.json:  # every chunk as text: stream_lines() walks twice
            self._query = (arena, state)
            return render.wrap(self.name, {"chunks": streamed.Stream([]), "total": None,
                                           "truncated": False, "diagnostics": []})
        stream = inv.target.chunk_stream(arena, state, self._limit(inv), STREAM_BATCH)

        def diagnostics() -> List[Record]:
            record = {"diagnostics": stream.diagnostics()}
            set_severities(record)
            return record["diagnostics"]
        return render.wrap(self.name, {
            "chunks": streamed.Stream(stream, streamed.encode_chunks),
            "total": streamed.Lazy(lambda: stream.total),
            "truncated": streamed.Lazy(lambda: stream.total > stream.listed),
            "diagnostics": streamed.Lazy(diagnostics)})

    def render(self, document: Record, inv: Invocation) -> List[str]:
        if document.get("allocator") in cmd_alloc.ALLOCATORS:
            return cmd_alloc.render_chunks(document, inv.args.limit is None, inv.style)
        return render.render_chunks(document, inv.names(), inv.args.limit is None,
                                    inv.style)

    def stream_lines(self, document: Record, inv: Invocation) -> Iterator[str]:
        """``render`` of every chunk, line by line (``--limit 0`` text); fills ``document``'s
        total and diagnostics before its last line."""
        if document.get("allocator") in cmd_alloc.ALLOCATORS:
            return cmd_alloc.stream_lines(document, inv.style)
        arena, state = self._query

        def done(stream: Any) -> None:
            record = {"diagnostics": stream.diagnostics()}
            set_severities(record)
            document["total"] = stream.total
            document["diagnostics"] = record["diagnostics"]

        def whole() -> List[str]:
            full = render.wrap(self.name, inv.target.chunks(arena, state, None))
            set_severities(full)
            document.update(total=full["total"], diagnostics=full["diagnostics"])
            return render.render_chunks(render.safe_doc(full), inv.names(), False, inv.style)
        return streamed.chunk_table(inv.target, arena, state, inv.names(), inv.style,
                                    STREAM_BATCH, done, whole)


class Chunk(Command):
    """``chunk ADDR``: the chunk holding an address."""

    name = "chunk"
    summary = "which chunk holds ADDR: its state, arena, offset and neighbours"
    description = ("Find the chunk holding ADDR (any address inside it, header included) and "
                   "show its state, size, arena, the offset of ADDR into the user data and "
                   "the previous and next chunks. Exit status 1 when no chunk holds ADDR.")
    completes_expressions = True

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("address", metavar="ADDR",
                            help="an address (0x… hex or decimal; in gdb any expression, "
                                 "e.g. $rax+8)")

    def collect(self, inv: Invocation) -> Record:
        return render.wrap(self.name, inv.target.chunk(inv.evaluate(inv.args.address)))

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render.render_chunk(document, inv.names(), inv.style)

    def status(self, document: Record) -> int:
        return 1 if document.get("chunk") is None else problem_status(document)


class Nmt(Command):
    """``nmt [--detail]``: HotSpot Native Memory Tracking from the image."""

    name = "nmt"
    summary = "HotSpot NMT: jcmd's VM.native_memory summary, from a core or a live JVM"
    description = ("Read the JVM's Native Memory Tracking state from the image (libjvm's "
                   ".symtab): per category reserved/committed, malloc, arena and mmap, as "
                   "'jcmd PID VM.native_memory summary scale=1' prints them. Also rebuilds "
                   "the per-category malloc totals from the NMT headers in front of each "
                   "malloc block (no JVM symbols needed) and reports the in-use malloc "
                   "memory NMT does not track (JNI libraries, zlib streams...). The thread "
                   "stacks' committed bytes are computed as jcmd's next report would (live: "
                   "pagemap; a core: the pages it holds), next to NMT's stale record. With NMT "
                   "off, says so and still reports untracked malloc and glibc figures. "
                   "--detail adds the malloc sites (detail mode) and reserved regions.")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--detail", action="store_true",
                            help="also list malloc call sites and virtual memory regions "
                                 "(needs -XX:NativeMemoryTracking=detail)")

    def collect(self, inv: Invocation) -> Record:
        return render.wrap(self.name, inv.target.nmt(bool(inv.args.detail)))

    def render(self, document: Record, inv: Invocation) -> List[str]:
        return render.render_nmt(document, inv.style)


COMMANDS: Dict[str, Command] = {c.name: c for c in (Arenas(), Heaps(), Bins(), Tcache(),
                                                     Chunks(), Chunk(), Nmt())}


def _register_extensions() -> None:
    """Commands defined in their own modules (they import this one): called once by the
    package's __init__, after this module is complete, so there is no import cycle."""
    from .cmd_chunk import commands as chunk_commands  # pylint: disable=import-outside-toplevel
    from .cmd_classify import Classify  # pylint: disable=import-outside-toplevel
    from .cmd_diff import Diff  # pylint: disable=import-outside-toplevel
    from .cmd_leaks import Leaks  # pylint: disable=import-outside-toplevel
    from .cmd_report import Report  # pylint: disable=import-outside-toplevel
    from .cmd_snapshot import Snapshot  # pylint: disable=import-outside-toplevel
    from .cmd_trend import Trend  # pylint: disable=import-outside-toplevel
    from .cmd_watch import Watch  # pylint: disable=import-outside-toplevel
    for command in (Classify(), Leaks(), Report(), Diff(), Snapshot(), Watch(), Trend(),
                    *chunk_commands()):
        COMMANDS[command.name] = command


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command has."""
    parser.add_argument("--json", action="store_true",
                        help="print a JSON document (schema heapwalk/1) instead of text")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="say where each layout and figure comes from (the profile, the "
                             "debug info, the glibc source it encodes)")


def build_parser(command: Command, prog: str) -> Parser:
    """A standalone parser for ``command`` (gdb uses one per subcommand)."""
    parser = Parser(prog=prog, description=command.description, add_help=True)
    command.configure(parser)
    add_common(parser)
    return parser


def capture_of(inv: Invocation) -> Optional[Record]:
    """How a live target was captured (the freeze, the copy), or None."""
    target = getattr(inv, "target", None)
    if target is None or getattr(target, "kind", None) != "live":
        return None
    try:
        return target.describe().get("capture")
    except Exception:  # pylint: disable=broad-except
        return None


def capture_line(capture: Record) -> str:
    """One line: how long the process was stopped and what was copied."""
    frozen = capture.get("frozen_seconds") or 0.0
    how = ("stopped %.3f s" % frozen) if frozen else "stopped by gdb"
    return ("live: %s to copy %s of memory (%d of %d mappings); analysed the copy"
            % (how, render.size(capture.get("copied_bytes", 0)),
               capture.get("copied_mappings", 0), capture.get("mappings", 0)))


def execute(command: Command, inv: Invocation, stream: bool = False) -> Output:
    """Run ``command``: JSON or text (diagnostics after the text), and its exit status.
    ``stream``: a streamed JSON document comes as ``Output.pieces`` (see :class:`Output`)."""
    if getattr(inv.args, "verbose", False):
        inv.style.verbose = True
    document = command.collect(inv)
    set_severities(document)
    capture = capture_of(inv) if getattr(command, "needs_target", True) else None
    if capture is not None and isinstance(document, dict):
        target = document.setdefault("target", {"kind": "live", "pid": inv.target.describe().get("pid")})
        if isinstance(target, dict):
            target.setdefault("frozen_seconds", capture.get("frozen_seconds"))
            target.setdefault("copied_bytes", capture.get("copied_bytes"))
            target.setdefault("capture", capture)
    info = getattr(getattr(inv, "target", None), "sysroot_info", None)
    if info and isinstance(document, dict):
        target = document.setdefault("target", {})
        if isinstance(target, dict):
            target.update(info)
    if inv.json and streamed.has_streams(document):
        pieces = streamed.pieces(document)
        if stream:
            return Output("", 0, document, pieces)
        text = "".join(pieces)
        return Output(text, command.status(document), document)
    if inv.json:
        return Output(render.to_json(document), command.status(document), document)
    if streamed.has_streams(document):  # every chunk as text
        pieces = _text_pieces(command, document, inv, capture)
        if stream:
            return Output("", 0, document, pieces)
        text = "".join(pieces)
        return Output(text, command.status(document), document)
    # Strings in the document come from the target (file names, NMT names, text samples...):
    # renderers see them escaped, and every line is checked again before it is printed.
    shown = render.safe_doc(document)
    lines = command.render(shown, inv)
    if capture is not None:
        lines = lines + ["", capture_line(capture)]
    notes = render.diagnostics(shown.get("diagnostics", []), inv.style)
    if notes:
        lines = lines + [""] + notes
    lines = termwidth.fit(lines, inv.style.width)  # no line wider than the terminal
    text = "\n".join(render.safe_line(line, inv.style) for line in lines)
    return Output(text + "\n", command.status(document), document)


def _text_pieces(command: Command, document: Record, inv: Invocation,
                 capture: Optional[Record]) -> Iterator[str]:
    """What :func:`execute` prints for a streamed text listing, line by line."""
    width = inv.style.width
    for line in command.stream_lines(document, inv):  # type: ignore[attr-defined]
        for part in termwidth.fit([line], width):  # no line wider than the terminal
            yield render.safe_line(part, inv.style) + "\n"
    tail: List[str] = []
    if capture is not None:
        tail += ["", capture_line(capture)]
    notes = render.diagnostics(render.safe_doc(document.get("diagnostics", [])), inv.style)
    if notes:
        tail += [""] + notes
    for line in termwidth.fit(tail, width):
        yield render.safe_line(line, inv.style) + "\n"
