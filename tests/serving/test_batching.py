"""Server-side batching: merge concurrent requests, split outputs, isolate failures."""

import threading
import time

import grpc
import numpy as np
import pytest

from keras_fgvc.serving.batching import BatchingQueue


class _Model:
    def __init__(self, delay=0.0):
        self.batches = []
        self.lock = threading.Lock()
        self.delay = delay

    def __call__(self, inputs):
        x = inputs["x"]
        with self.lock:
            self.batches.append(len(x))
        if np.any(x < 0):
            raise ValueError("negative input")
        return {"y": x * 2.0, "s": x.sum(axis=1)}


def _run_concurrently(queue, requests):
    results = [None] * len(requests)

    def work(i):
        try:
            results[i] = queue.run({"x": requests[i]})
        except ValueError as err:
            results[i] = err

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_merges_and_splits_rows():
    model = _Model()
    queue = BatchingQueue(model, max_batch_size=64, batch_timeout_micros=200_000)
    requests = [np.full((i % 3 + 1, 2), float(i)) for i in range(8)]
    try:
        results = _run_concurrently(queue, requests)
    finally:
        queue.close()
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)
        np.testing.assert_array_equal(result["s"], request.sum(axis=1))
    assert sum(model.batches) == sum(len(r) for r in requests)
    assert len(model.batches) < len(requests)  # some requests shared a batch
    assert max(model.batches) <= 64


def test_bad_request_does_not_fail_its_batch_mates():
    model = _Model()
    queue = BatchingQueue(model, max_batch_size=64, batch_timeout_micros=200_000)
    requests = [np.ones((1, 2)), -np.ones((1, 2)), 3 * np.ones((2, 2))]
    try:
        results = _run_concurrently(queue, requests)
    finally:
        queue.close()
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0]["y"], 2 * np.ones((1, 2)))
    np.testing.assert_array_equal(results[2]["y"], 6 * np.ones((2, 2)))


def test_respects_max_batch_size_and_shapes():
    model = _Model()
    queue = BatchingQueue(model, max_batch_size=4, batch_timeout_micros=100_000)
    requests = [np.ones((3, 2))] * 4 + [np.ones((1, 5))]  # different trailing shape: not merged
    try:
        results = _run_concurrently(queue, requests)
    finally:
        queue.close()
    assert all(b <= 4 for b in model.batches)
    np.testing.assert_array_equal(results[4]["s"], [5.0])
    # A closed queue still answers (directly), e.g. for a version being unloaded.
    np.testing.assert_array_equal(queue.run({"x": np.ones((1, 2))})["y"], [[2.0, 2.0]])


def test_timeout_counts_from_the_oldest_request_arrival():
    """TF Serving's batch_timeout_micros: a request that queued while the worker ran the
    previous batch has already waited; its batch runs as soon as the worker is free."""
    starts, ends = [], []

    def slow(inputs):
        starts.append(time.monotonic())
        time.sleep(0.8)
        ends.append(time.monotonic())
        return {"y": inputs["x"]}

    queue = BatchingQueue(slow, max_batch_size=2, batch_timeout_micros=600_000)
    try:
        first = [threading.Thread(target=queue.run, args=({"x": np.ones((1, 1))},))
                 for _ in range(2)]  # together a full batch: runs at once
        for t in first:
            t.start()
        time.sleep(0.1)  # the worker runs that batch; the next request queues meanwhile
        late = queue.run({"x": np.ones((1, 1))})
        for t in first:
            t.join(timeout=30)
    finally:
        queue.close()
    np.testing.assert_array_equal(late["y"], np.ones((1, 1)))
    assert len(starts) == 2
    # It had waited ~0.7 s > 0.6 s when the worker got free: no second 0.6 s wait.
    assert starts[1] - ends[0] < 0.3, starts[1] - ends[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingQueue(_Model(), max_batch_size=0)
    with pytest.raises(ValueError, match="batch_timeout_micros"):
        BatchingQueue(_Model(), batch_timeout_micros=-1)


def test_allowed_batch_sizes_pad_with_first_row_and_slice_back():
    seen = []

    def model(inputs):
        seen.append(inputs["x"].copy())
        return {"y": inputs["x"] * 2.0}

    queue = BatchingQueue(model, max_batch_size=8, batch_timeout_micros=0,
                          allowed_batch_sizes=(2, 4, 8))
    try:
        x = np.arange(6.0).reshape(3, 2)
        np.testing.assert_array_equal(queue.run({"x": x})["y"], x * 2)
        np.testing.assert_array_equal(queue.run({"x": x[:2]})["y"], x[:2] * 2)
    finally:
        queue.close()
    np.testing.assert_array_equal(seen[0], np.concatenate([x, x[:1]]))  # 3 rows -> 4
    assert [len(s) for s in seen] == [4, 2]
    assert queue.batch_sizes_run == [4, 2]


def test_full_queue_is_unavailable_and_threads_run_concurrently():
    import grpc

    from keras_fgvc.serving import errors

    release, started = threading.Event(), threading.Semaphore(0)

    def model(inputs):
        started.release()
        release.wait(30)
        return {"y": inputs["x"]}

    queue = BatchingQueue(model, max_batch_size=2, batch_timeout_micros=0,
                          num_batch_threads=2, max_enqueued_batches=1)
    threads = [threading.Thread(target=queue.run, args=({"x": np.ones((1, 1))},))
               for _ in range(2)]
    queued = [threading.Thread(target=queue.run, args=({"x": np.ones((1, 1))},))
              for _ in range(2)]
    try:
        for t in threads:  # both run at once: two worker threads
            t.start()
            assert started.acquire(timeout=10)
        for t in queued:  # these fill the one-batch (2-row) queue
            t.start()
        deadline = 50
        while len(queue._queue) < 2 and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        with pytest.raises(errors.ServingError, match="queue .* is full") as info:
            queue.run({"x": np.ones((1, 1))})
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        release.set()
        for t in threads + queued:
            if t.is_alive() or t.ident is not None:
                t.join(timeout=30)
        queue.close()


def test_bad_batching_options():
    for kwargs, message in [({"num_batch_threads": 0}, "num_batch_threads"),
                            ({"max_enqueued_batches": -1}, "max_enqueued_batches"),
                            ({"allowed_batch_sizes": (4, 2, 8)}, "strictly increasing"),
                            ({"allowed_batch_sizes": (2, 4)}, "end at max_batch_size=8")]:
        with pytest.raises(ValueError, match=message):
            BatchingQueue(_Model(), max_batch_size=8, **kwargs)


class _Gone:
    """A `limits.CallContext` whose caller has cancelled."""

    def expired(self):
        from keras_fgvc.serving import errors

        return errors.ServingError(grpc.StatusCode.CANCELLED, "cancelled by the caller")


def test_queued_request_whose_caller_left_is_not_run():
    release = threading.Event()

    def model(inputs):
        release.wait(10)
        return {"y": inputs["x"] * 2.0}

    seen = []
    queue = BatchingQueue(lambda d: (seen.append(len(d["x"])), model(d))[1], max_batch_size=8,
                          batch_timeout_micros=0)
    try:
        first = threading.Thread(target=queue.run, args=({"x": np.ones((1, 2))},))
        first.start()
        time.sleep(0.2)  # the first request occupies the worker
        errors_seen = []

        def gone():
            try:
                queue.run({"x": np.ones((3, 2))}, _Gone())
            except Exception as err:  # noqa: BLE001 - recorded for the assertion
                errors_seen.append(err)

        second = threading.Thread(target=gone)
        second.start()
        time.sleep(0.2)
        release.set()
        first.join(10)
        second.join(10)
        assert seen == [1]  # the 3-row request never reached the model
        assert errors_seen and errors_seen[0].code == grpc.StatusCode.CANCELLED
    finally:
        release.set()
        queue.close()
