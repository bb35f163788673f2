"""SIGINT, SIGTERM and SIGHUP end a run alike: as a KeyboardInterrupt in the main thread.

Both programs (the node and the offline tool) then finish what is in flight and write what was
mapped.  A signal that the process inherited as ignored stays ignored (``nohup`` ignores
SIGHUP, a shell ignores SIGINT for background jobs): that is the caller's wish.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, the ending signals raise KeyboardInterrupt (main thread only;
    elsewhere, and for a signal inherited as ignored, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in ENDING_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
