"""Resumable, parallel, chunked map: the engine of every long job (prepare, fingerprints, evaluation).

Results of each chunk are written atomically to ``<work_dir>/<index>.pkl`` as soon as the chunk is
done, so an interrupted job (Ctrl-C, kill -9) loses at most the chunks in flight and a rerun skips
what is on disk. Each item may get a time limit (SIGALRM in the worker): a pathological input
becomes a recorded failure instead of a hung job.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm


class ItemTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise ItemTimeout()


def _call(packed):
    func, item, timeout = packed
    if not timeout:
        return func(item)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return func(item)
    except ItemTimeout:
        return ItemTimeout(f"timed out after {timeout:g} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def chunked_map(func: Callable, items: Sequence, work_dir: Path, *, chunk: int = 512, workers: int | None = None,
                timeout: float | None = None, desc: str = "", progress: bool = True) -> list:
    """``[func(x) for x in items]`` in parallel, resumable through ``work_dir``.

    ``func`` must be picklable (module level). With a ``timeout``, an item that runs over yields an
    :class:`ItemTimeout` instance in its place.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(items) + chunk - 1) // chunk
    todo = [i for i in range(n_chunks) if not (work_dir / f"{i:05d}.pkl").exists()]
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(items), desc=desc, unit="it", disable=not progress, smoothing=0.1)
    bar.update(len(items) - sum(len(items[i * chunk:(i + 1) * chunk]) for i in todo))
    pool = mp.get_context("fork").Pool(workers) if workers > 1 and todo else None
    try:
        for i in todo:
            part = [(func, x, timeout) for x in items[i * chunk:(i + 1) * chunk]]
            if pool:
                res = pool.map(_call, part, chunksize=max(1, len(part) // (4 * workers)))
            else:
                res = list(map(_call, part))
            tmp = work_dir / f"{i:05d}.tmp"
            with open(tmp, "wb") as f:
                pickle.dump(res, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, work_dir / f"{i:05d}.pkl")
            bar.update(len(part))
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()
    out = []
    for i in range(n_chunks):
        with open(work_dir / f"{i:05d}.pkl", "rb") as f:
            out.extend(pickle.load(f))
    return out


def clear(work_dir: Path) -> None:
    """Remove a finished job's chunk files."""
    work_dir = Path(work_dir)
    if work_dir.is_dir():
        for p in work_dir.iterdir():
            p.unlink()
        work_dir.rmdir()
