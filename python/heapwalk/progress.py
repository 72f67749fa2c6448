"""Long engine work off the main thread: a progress line and a clean Ctrl-C.

The engine releases the GIL while it walks; running the call in a worker thread keeps the main
thread free to draw progress (``done/total`` polled from the engine) and to receive Ctrl-C,
which sets the engine's cancel flag so the work unwinds and raises KeyboardInterrupt.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Optional

from .render import safe

#: Draw nothing for work that finishes faster than this (seconds; $HEAPWALK_PROGRESS_AFTER).
QUIET_FOR = float(os.environ.get("HEAPWALK_PROGRESS_AFTER", "0.5"))


def run(call: Callable[[], Any], native: Any, sink: Optional[Callable[[str], None]]) -> Any:
    """Run ``call()`` (an engine method) in a worker thread; report progress to ``sink``."""
    result: dict = {}
    finished = threading.Event()

    def work() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
        finally:
            finished.set()

    def wait_until_finished() -> None:
        # An Event, not Thread.join(): a join interrupted by Ctrl-C can later return at once
        # while the thread still runs (CPython 3.11), and the target would be closed under it.
        while not finished.wait(0.1):
            pass

    native.cancel(False)
    worker = threading.Thread(target=work, name="heapwalk-engine", daemon=True)
    started = time.monotonic()
    shown = False
    worker.start()
    try:
        while not finished.wait(0.1):
            if sink is not None and time.monotonic() - started > QUIET_FOR:
                phase, done, total = native.progress()
                pct = " %3d%%" % min(100, done * 100 // total) if total else ""
                sink("\rheapwalk: %s%s" % (safe(phase or "working"), pct))
                shown = True
    except KeyboardInterrupt:
        native.cancel(True)
        wait_until_finished()
        native.cancel(False)
        raise
    finally:
        if shown and sink is not None:
            sink("\r\033[K")
    if "error" in result:
        raise result["error"]
    return result.get("value")
