"""One BLAS thread for small numeric work.

A threaded BLAS (OpenBLAS by default uses every core) spends more time waking and
synchronising threads than computing on the small vectors and matrices of a consensus fit on a
task-queue request or of the empirical-Bayes prior. Measured on the 2-core development machine:
the prior's L-BFGS-B took 50-140 ms per call instead of 0.8-1.9 ms, and a Dawid-Skene fit on
10,000 reads 0.5 s instead of 0.02-0.05 s. :func:`one_blas_thread` limits BLAS to one thread
for the duration of a ``with`` block (other thread pools, and other threads, are untouched).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from typing import Any

from threadpoolctl import ThreadpoolController


@cache
def _controller() -> ThreadpoolController:
    """The process's thread-pool controller (made once: making one scans loaded libraries)."""
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context manager under which BLAS calls run on one thread."""
    return _controller().limit(limits=1, user_api="blas")
