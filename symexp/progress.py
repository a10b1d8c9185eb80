"""Progress a person can read: a bar on a terminal; a few summary lines when output goes to a file.

A bar redrawn thousands of times is noise in a log (a reproduce log used to be 0.5 MB of redraws),
so without a terminal a job prints one line each time it crosses another tenth of its steps. So it does
with SYMEXP_PROGRESS=lines, which symexp.schedule sets: its workers share one terminal.
"""
from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

MARKS = 10  # summary lines per job when not on a terminal


class Progress:
    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.tty = sys.stderr.isatty() and os.environ.get("SYMEXP_PROGRESS") != "lines"
        self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False) if enabled and self.tty else None
        self.next_mark = (initial * MARKS // max(total, 1) + 1) * total / MARKS
        self.started = time.time()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def eval(self, step: int, loss: float, alive: int, size: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", alive=f"{alive}/{size}")
        elif self.enabled and step >= self.next_mark:
            while self.next_mark <= step:
                self.next_mark += self.total / MARKS
            print(f"{self.desc}: step {step}/{self.total} ({100 * step / self.total:.0f} %), loss {loss:.4g}, "
                  f"alive {alive}/{size}, {time.time() - self.started:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
