"""A simulated labeler: labels tasks through the HTTP API from known ground truth.

    python -m keras_fgvc.bootstrap simulate --db DB --url http://127.0.0.1:8080 \
        --error_rate 0.05 --labeler sim-1

It drives exactly what a person's browser drives (GET /api/next, POST
/api/decisions). The truth of each candidate is read from the database
(`image.truth`, recorded by ``init --truth CSV``): the right answer is
'accept' iff the truth is the task's category; it is flipped with probability
`error_rate`, decided per (seed, labeler, task) so a rerun makes the same
mistakes.
"""

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request

from keras_fgvc.bootstrap.store import open_store
from keras_fgvc.bootstrap.store_checks import check_int, check_labeler, check_number

FLIP = {"accept": "reject", "reject": "accept"}


def _request(url, body=None, auth_token=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if auth_token:
        headers["Authorization"] = f"Bearer {auth_token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers),
                                    timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        raise RuntimeError(f"{url} answered {e.code}: {detail}") from None


def _truths(db):
    with open_store(db) as store:
        truths = {image_id: truth for image_id, _, truth in store.images() if truth is not None}
    if not truths:
        raise ValueError(f"{db} records no ground truth for any image: simulate needs "
                         "`init --truth CSV` (path,label lines)")
    return truths


def simulated_decision(truth, category, error_rate, seed, labeler, task_id):
    """'accept' iff truth == category, flipped with probability `error_rate` (fixed per task)."""
    right = "accept" if truth == category else "reject"
    flipped = random.Random(f"{seed}:{labeler}:{task_id}").random() < error_rate
    return (FLIP[right] if flipped else right), flipped


def simulate(db, url, error_rate, labeler, seed=0, batch=50, max_tasks=None, auth_token=None,
             timeout=60):
    """Label the tasks the server hands `labeler` until none is left (or `max_tasks`).

    Returns {'labeler', 'decisions', 'accepted', 'rejected', 'flipped', 'skipped',
    'requests', 'seconds'} ('skipped': decisions the server did not record because
    the task's slots had gone to other labelers, e.g. after this one's lease lapsed).
    """
    error_rate = check_number(error_rate, "error_rate", 0, 1)
    labeler = check_labeler(labeler)
    seed = check_int(seed, "seed")
    batch = check_int(batch, "batch", 1)
    if max_tasks is not None:
        max_tasks = check_int(max_tasks, "max_tasks", 0)
    if not isinstance(url, str) or urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise ValueError(f"url must be the server's http(s) address, got {url!r}")
    base = url.rstrip("/")
    truths = _truths(db)
    counts = {"labeler": labeler, "decisions": 0, "accepted": 0, "rejected": 0, "flipped": 0,
              "skipped": 0, "requests": 0}
    start = time.perf_counter()
    while max_tasks is None or counts["decisions"] < max_tasks:
        n = batch if max_tasks is None else min(batch, max_tasks - counts["decisions"])
        query = urllib.parse.urlencode({"labeler": labeler, "n": n})
        tasks = _request(f"{base}/api/next?{query}", auth_token=auth_token,
                         timeout=timeout)["tasks"]
        counts["requests"] += 1
        if not tasks:
            break
        decisions, flips = [], []
        for task in tasks:
            truth = truths.get(task["candidate_id"])
            if truth is None:
                raise ValueError(f"image {task['candidate_id']} (task {task['task_id']}) has "
                                 "no recorded truth; record it with `init --truth CSV`")
            decision, flipped = simulated_decision(truth, task["category"], error_rate, seed,
                                                   labeler, task["task_id"])
            flips.append(flipped)
            decisions.append({"task_id": task["task_id"], "labeler": labeler,
                              "decision": decision, "seconds": 0.0})
        answer = _request(f"{base}/api/decisions", {"decisions": decisions},
                          auth_token=auth_token, timeout=timeout)
        counts["requests"] += 1
        skipped = {item["task_id"] for item in answer.get("skipped", [])}
        if answer["recorded"] + len(skipped) != len(decisions):
            raise RuntimeError(f"the server recorded {answer['recorded']} of {len(decisions)} "
                               f"decisions and skipped {len(skipped)}")
        for item, flipped in zip(decisions, flips):
            if item["task_id"] in skipped:
                counts["skipped"] += 1
                continue
            counts["flipped"] += flipped
            counts["accepted" if item["decision"] == "accept" else "rejected"] += 1
        counts["decisions"] += answer["recorded"]
    counts["seconds"] = time.perf_counter() - start
    return counts
