"""Shared CLI behaviour: one-line errors without tracebacks, non-zero exit codes, research-use notice.

Exit codes: 0 success, 2 bad input (:class:`~mmxai_core.errors.MMXAIError`), 3 unexpected internal
error, 130 interrupted. Set ``MMXAI_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Sequence

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.errors import MMXAIError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


def run_cli(prog: str, body: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> int:
    """Run ``body(argv)`` and turn errors into one line on stderr and an exit code.

    ``body`` returns an exit code or None (= 0). argparse's own usage errors exit 2 as usual.
    """
    try:
        code = body(argv)
        return EXIT_OK if code is None else int(code)
    except MMXAIError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{prog}: error: {first_line}", file=sys.stderr)
        more = str(exc).splitlines()[1:]
        for line in more[:50]:
            print(f"{prog}:   {line.strip()}", file=sys.stderr)
        if len(more) > 50:
            print(f"{prog}:   ... and {len(more) - 50} more", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, keep the traceback for MMXAI_DEBUG=1
        if os.environ.get("MMXAI_DEBUG"):
            traceback.print_exc()
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
              f"(set MMXAI_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


def notice(prog: str) -> None:
    """Print the research-use notice to stderr (every CLI does this once)."""
    print(f"{prog}: {RESEARCH_USE_NOTICE}", file=sys.stderr)


class HeldNotice:
    """The research-use notice, held back until the inputs are accepted, then printed once.

    Call the object when work on accepted inputs begins, and again at the end of a successful run (it prints
    at most once); :meth:`before` wraps a progress-line function so that the notice precedes the first
    line. A refused input thus gets exactly one stderr line, and every successful run shows the notice.
    ``enabled=False`` (e.g. a non-zero torchrun rank) prints nothing.
    """

    def __init__(self, prog: str, enabled: bool = True):
        self.prog = prog
        self.pending = enabled

    def __call__(self) -> None:
        if self.pending:
            self.pending = False
            notice(self.prog)

    def before(self, log: Callable[..., None]) -> Callable[..., None]:
        """``log`` that prints the notice first, the first time it is called."""
        def wrapped(*args, **kwargs) -> None:
            self()
            log(*args, **kwargs)
        return wrapped
