"""Server-side request batching (``--enable_batching``), like TF Serving's batching session.

Concurrent requests to one signature are queued; a worker thread takes the
oldest and, unless it has already waited ``batch_timeout_micros`` in the queue
(as in TF Serving, the timeout counts from the oldest request's arrival, so a
request that queued while the worker ran the previous batch is not made to
wait again), waits for more until then, concatenates up to
``max_batch_size`` rows along axis 0, runs the model once and splits the
outputs back by row counts. Requests whose non-batch dimensions differ are
never merged. If a merged batch fails (one request's bad image), each request
is re-run alone so only the bad request gets the error.

Like TF Serving's ``BatchingParameters`` (see `batching_parameters`):
``num_batch_threads`` batches run concurrently (one is formed at a time);
``max_enqueued_batches`` bounds the queue (UNAVAILABLE when full); and with
``allowed_batch_sizes`` every batch is padded up to the next allowed size with
copies of its first row, and the padded rows' outputs are dropped.

A queued request whose caller has cancelled or whose deadline has passed
(`limits.CallContext`) is answered CANCELLED / DEADLINE_EXCEEDED when a batch
is formed and never joins it.
"""

import collections
import threading
import time

import grpc
import numpy as np

from keras_fgvc.serving import errors, limits

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"


def task_rows(inputs):
    """Rows (batch size) of a request: the leading dimension of its inputs."""
    return next(iter(inputs.values())).shape[0]


class _Task:
    def __init__(self, inputs, context=limits.NO_DEADLINE):
        self.inputs = inputs
        self.context = context
        self.rows = task_rows(inputs)
        self.enqueued = time.monotonic()
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
        num_batch_threads: worker threads (batches executed concurrently).
        max_enqueued_batches: queue bound in batches of ``max_batch_size``
            rows (0 = unbounded); a request that does not fit gets an
            UNAVAILABLE `errors.ServingError`, as in TF Serving.
        allowed_batch_sizes: optional strictly increasing sizes ending at
            ``max_batch_size``; batches are padded up to the next one.

    Example:
        >>> queue = BatchingQueue(lambda d: {"y": d["x"] * 2}, 8, 1000)
        >>> queue.run({"x": np.ones((2, 3))})["y"].shape
        (2, 3)
        >>> queue.close()
    """

    def __init__(self, run_fn, max_batch_size=32, batch_timeout_micros=1000,
                 num_batch_threads=1, max_enqueued_batches=0, allowed_batch_sizes=()):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size!r}.")
        if batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {batch_timeout_micros!r}.")
        if num_batch_threads < 1:
            raise ValueError(f"num_batch_threads must be >= 1, got {num_batch_threads!r}.")
        if max_enqueued_batches < 0:
            raise ValueError(f"max_enqueued_batches must be >= 0, got {max_enqueued_batches!r}.")
        sizes = [int(s) for s in allowed_batch_sizes]
        if sizes and (any(a >= b for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1
                      or sizes[-1] != max_batch_size):
            raise ValueError(f"allowed_batch_sizes must be positive, strictly increasing and "
                             f"end at max_batch_size={max_batch_size}, got {sizes!r}.")
        self._run_fn = run_fn
        self._max_batch_size = int(max_batch_size)
        self._timeout_s = batch_timeout_micros / 1e6
        self._max_queued_rows = int(max_enqueued_batches) * self._max_batch_size
        self._allowed_batch_sizes = sizes
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._forming = threading.Lock()  # one batch is formed at a time
        self._closed = False
        self.batches_run = 0
        self.batch_sizes_run = []  # executed (padded) batch sizes, for tests and logs
        self._threads = [threading.Thread(target=self._loop, name=f"batching-{i}", daemon=True)
                         for i in range(int(num_batch_threads))]
        for thread in self._threads:
            thread.start()

    def run(self, inputs, context=limits.NO_DEADLINE):
        """Queue one request and wait for its outputs (raises what the model raised).

        `context` (`limits.CallContext`): a request whose caller has gone by
        the time its batch is formed is not run.
        """
        task = _Task(inputs, context)
        with self._cond:
            if self._closed or task.rows >= self._max_batch_size:
                task = None
            elif (self._max_queued_rows
                  and sum(t.rows for t in self._queue) + task.rows > self._max_queued_rows):
                raise errors.ServingError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL_MESSAGE)
            else:
                self._queue.append(task)
                self._cond.notify_all()
        if task is None:  # closed (version being unloaded) or already a full batch
            return self._run_padded(inputs, task_rows(inputs))
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self):
        """Finish queued work, then stop the worker threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def _take_batch(self):
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = first.enqueued + self._timeout_s
            while True:
                rows = sum(t.rows for t in self._queue if t.key == first.key)
                remaining = deadline - time.monotonic()
                if rows >= self._max_batch_size or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            batch, rows, kept = [], 0, collections.deque()
            while self._queue:
                task = self._queue.popleft()
                gone = task.context.expired()
                if gone is not None:  # the caller left while queued: answer, do not run
                    task.error = gone
                    task.done.set()
                elif task.key == first.key and rows + task.rows <= self._max_batch_size:
                    batch.append(task)
                    rows += task.rows
                else:
                    kept.append(task)
            self._queue = kept
            return batch

    def _loop(self):
        while True:
            with self._forming:
                batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _run_padded(self, inputs, rows):
        """Run `inputs` padded to the next allowed batch size; outputs cut back to `rows`."""
        size = next((s for s in self._allowed_batch_sizes if s >= rows), rows)
        with self._cond:
            self.batch_sizes_run.append(size)
        if size == rows:
            return self._run_fn(inputs)
        padded = {k: np.concatenate([v, np.repeat(v[:1], size - rows, axis=0)])
                  for k, v in inputs.items()}
        return {k: v[:rows] for k, v in self._run_fn(padded).items()}

    def _execute(self, batch):
        self.batches_run += 1
        if len(batch) == 1:
            self._execute_alone(batch[0])
            return
        merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
        try:
            outputs = self._run_padded(merged, sum(t.rows for t in batch))
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
            task.result = self._run_padded(task.inputs, task.rows)
        except Exception as err:  # noqa: BLE001 - handed back to the caller's thread
            task.error = err
        task.done.set()


def queue_factory(params):
    """``fn(run_fn) -> BatchingQueue`` for `BatchingParameters` `params` (None: no batching)."""
    if params is None:
        return None
    return lambda run_fn: BatchingQueue(
        run_fn, params.max_batch_size, params.batch_timeout_micros, params.num_batch_threads,
        params.max_enqueued_batches, params.allowed_batch_sizes)
