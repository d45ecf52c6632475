"""Server-side request batching (``--enable_batching``), like TF Serving's batching session.

Concurrent requests to one signature are queued; a worker thread takes the
oldest, waits up to ``batch_timeout_micros`` for more, concatenates up to
``max_batch_size`` rows along axis 0, runs the model once and splits the
outputs back by row counts. Requests whose non-batch dimensions differ are
never merged. If a merged batch fails (one request's bad image), each request
is re-run alone so only the bad request gets the error.
"""

import collections
import threading
import time

import numpy as np


class _Task:
    def __init__(self, inputs):
        self.inputs = inputs
        self.rows = next(iter(inputs.values())).shape[0]
        self.key = tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
        self.done = threading.Event()
        self.result = None
        self.error = None


class BatchingQueue:
    """Batches calls to ``run_fn(inputs) -> outputs`` (dicts of batch-major arrays).

    Args:
        run_fn: runs one (merged) batch.
        max_batch_size: most rows in one merged batch.
        batch_timeout_micros: how long the oldest request waits for company.

    Example:
        >>> queue = BatchingQueue(lambda d: {"y": d["x"] * 2}, 8, 1000)
        >>> queue.run({"x": np.ones((2, 3))})["y"].shape
        (2, 3)
        >>> queue.close()
    """

    def __init__(self, run_fn, max_batch_size=32, batch_timeout_micros=1000):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size!r}.")
        if batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {batch_timeout_micros!r}.")
        self._run_fn = run_fn
        self._max_batch_size = int(max_batch_size)
        self._timeout_s = batch_timeout_micros / 1e6
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self._thread = threading.Thread(target=self._loop, name="batching", daemon=True)
        self._thread.start()

    def run(self, inputs):
        """Queue one request and wait for its outputs (raises what the model raised)."""
        task = _Task(inputs)
        with self._cond:
            if self._closed or task.rows >= self._max_batch_size:
                task = None
            else:
                self._queue.append(task)
                self._cond.notify_all()
        if task is None:  # closed (version being unloaded) or already a full batch
            return self._run_fn(inputs)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self):
        """Finish queued work, then stop the worker thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _take_batch(self):
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = time.monotonic() + self._timeout_s
            while True:
                rows = sum(t.rows for t in self._queue if t.key == first.key)
                remaining = deadline - time.monotonic()
                if rows >= self._max_batch_size or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            batch, rows, kept = [], 0, collections.deque()
            while self._queue:
                task = self._queue.popleft()
                if task.key == first.key and rows + task.rows <= self._max_batch_size:
                    batch.append(task)
                    rows += task.rows
                else:
                    kept.append(task)
            self._queue = kept
            return batch

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._execute(batch)

    def _execute(self, batch):
        self.batches_run += 1
        if len(batch) == 1:
            self._execute_alone(batch[0])
            return
        merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
        try:
            outputs = self._run_fn(merged)
        except Exception:  # noqa: BLE001 - isolate the failing request
            for task in batch:
                self._execute_alone(task)
            return
        start = 0
        for task in batch:
            task.result = {k: v[start:start + task.rows] for k, v in outputs.items()}
            start += task.rows
            task.done.set()

    def _execute_alone(self, task):
        try:
            task.result = self._run_fn(task.inputs)
        except Exception as err:  # noqa: BLE001 - handed back to the caller's thread
            task.error = err
        task.done.set()
