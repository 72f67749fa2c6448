# heapwalk for gdb: walk glibc malloc arenas of a core file or a live process.
#
#     gdb -x /path/to/heapwalk/gdbinit [PROGRAM] [CORE]
#
# Works from any directory. gdb gives a sourced script no way to learn its own path, so the
# Python block below finds this file among the files gdb has open (it stays open while gdb
# sources it); $HEAPWALK_ROOT overrides the search. Then it puts <repo>/python on sys.path
# and registers the 'heapwalk' commands ('heapwalk' alone lists them).
python
def _heapwalk_setup():
    import os
    import sys

    def package_dir(root):
        """The directory holding the heapwalk package under a candidate root, or None."""
        for candidate in (os.path.join(root, "python"), root):
            if os.path.isfile(os.path.join(candidate, "heapwalk", "gdbcmd.py")):
                return candidate
        return None

    roots = []
    if os.environ.get("HEAPWALK_ROOT"):
        roots.append(os.environ["HEAPWALK_ROOT"])
    try:
        fds = sorted(os.listdir("/proc/self/fd"), key=int, reverse=True)
    except OSError:
        fds = []
    for fd in fds:
        try:
            path = os.readlink(os.path.join("/proc/self/fd", fd))
        except OSError:
            continue
        if path.startswith("/") and os.path.isfile(path):
            roots.append(os.path.dirname(path))
    for root in roots:
        found = package_dir(root)
        if found:
            break
    else:
        gdb.write("heapwalk: cannot find heapwalk's python/ directory next to this gdbinit\n"
                  "hint: set HEAPWALK_ROOT to the heapwalk checkout\n", gdb.STDERR)
        return
    if found not in sys.path:
        sys.path.insert(0, found)
    try:
        import heapwalk.gdbcmd
        heapwalk.gdbcmd.register()
    except Exception as exc:  # no traceback: one line and a hint
        gdb.write("heapwalk: cannot load the gdb commands from %s: %s\n" % (found, exc),
                  gdb.STDERR)


_heapwalk_setup()
del _heapwalk_setup
end
