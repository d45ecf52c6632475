"""Labelling API latency: GET /api/next and POST /api/decisions, 1,000,000 candidates in SQLite.

A SQLite project with `--candidates` open tasks (built through the Store's
bulk inserts), served by `keras_fgvc.bootstrap.web.serve` (the threaded
werkzeug server) in its own process; `--labelers` concurrent labelers
(threads, each with its own HTTP/1.1 keep-alive connection, as a browser)
loop next (n = `--batch`) -> decisions for `--seconds` in three scenarios:
``busy`` (no pause: a stress test, what the goal is judged on), ``paced``
(a pause of `--think_ms` between loops) and ``one_labeler``. Reported: p50 /
p95 / p99 latency of each endpoint (the first `--warmup` loops of each
labeler left out) and decisions per second. Goal: p95 < 50 ms for both.

    python benchmarks/bootstrap_api.py            # writes benchmarks/results/bootstrap_api.json
    python benchmarks/bootstrap_api.py --quick    # 20,000 candidates, 4 s each (a smoke run)
"""

import argparse
import http.client
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from keras_fgvc.bootstrap.store import open_store  # noqa: E402

GOAL_MS = 50.0
CATEGORIES = 10
SEED_PER_CATEGORY = 10


def build(path, candidates, chunk=100_000):
    """A project at `path` with `candidates` open tasks in round 1 (status 'labelling')."""
    started = time.perf_counter()
    store = open_store(path, create=True)
    store.init_project({"rounds": 3, "seed_dir": "/bench/seed", "pool_dir": "/bench/pool"})
    categories = store.add_categories([(f"class_{c:02d}", f"category number {c}")
                                       for c in range(CATEGORIES)])
    store.add_images({"path": f"/bench/seed/{c.name}/{j}.png", "origin": "seed"}
                     for c in categories for j in range(SEED_PER_CATEGORY))
    seed_ids = store.image_ids(f"/bench/seed/{c.name}/{j}.png" for c in categories
                               for j in range(SEED_PER_CATEGORY))
    store.add_members((seed_ids[f"/bench/seed/{c.name}/{j}.png"], c.id, "positive", 0)
                      for c in categories for j in range(SEED_PER_CATEGORY))
    store.start_round(1, model_version="r1-bench")
    rng = random.Random(0)
    neighbors = sorted(seed_ids.values())[:3]
    rows = []
    for start in range(0, candidates, chunk):
        stop = min(candidates, start + chunk)
        store.add_images({"path": f"/bench/pool/{i:07d}.jpg", "origin": "pool", "subset": 1}
                         for i in range(start, stop))
        ids = store.image_ids(f"/bench/pool/{i:07d}.jpg" for i in range(start, stop))
        for image_id in ids.values():
            score = rng.random()
            rows.append({"image_id": image_id, "category_id": rng.choice(categories).id,
                         "score": score, "selected": score > 0.5, "uniform": rng.random() < 0.1,
                         "gold": False, "neighbors": neighbors})
    store.open_tasks(1, rows)  # one call for the round, as `rounds.run_round` makes
    store.update_round(1, status="labelling")
    store.close()
    return time.perf_counter() - started


def start_server(db):
    code = "import sys; from keras_fgvc.bootstrap.web import serve; serve(sys.argv[1], port=0)"
    process = subprocess.Popen([sys.executable, "-c", code, db], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = process.stdout.readline()
    if "http://" not in line:
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, "http://" + line.split("http://", 1)[1].split("/", 1)[0]


class Client:
    """One labeler's HTTP/1.1 connection, kept alive between requests like a browser's."""

    def __init__(self, base):
        self.host, self.port = base.split("://", 1)[1].split(":")
        self.connection = None

    def timed(self, path, body=None):
        """(milliseconds, JSON answer) of GET `path`, or POST `body` to it."""
        started = time.perf_counter()
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, int(self.port),
                                                             timeout=60)
            try:
                if body is None:
                    self.connection.request("GET", path)
                else:
                    self.connection.request("POST", path, json.dumps(body),
                                            {"Content-Type": "application/json"})
                response = self.connection.getresponse()
                payload = json.loads(response.read())
                break
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {payload}")
        return (time.perf_counter() - started) * 1000.0, payload


def labeler(base, name, batch, until, warmup, out, think_ms=0.0):
    client, rng = Client(base), random.Random(name)
    loops = 0
    while time.perf_counter() < until:
        ms_next, payload = client.timed(f"/api/next?labeler={name}&n={batch}")
        tasks = payload["tasks"]
        if not tasks:
            break
        decisions = [{"task_id": t["task_id"], "labeler": name, "seconds": rng.uniform(0.5, 3),
                      "decision": rng.choice(("accept", "reject", "reject", "unsure"))}
                     for t in tasks]
        ms_post, payload = client.timed("/api/decisions", {"decisions": decisions})
        assert payload == {"recorded": len(decisions), "skipped": []}, payload
        if think_ms:
            time.sleep(rng.uniform(0.5, 1.5) * think_ms / 1000.0)
        loops += 1
        if loops > warmup:
            out["next"].append(ms_next)
            out["decisions"].append(ms_post)
            out["decided"] += len(decisions)


def percentiles(values):
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}

    def at(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"count": len(ordered), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "mean_ms": sum(ordered) / len(ordered), "max_ms": ordered[-1]}


def run_scenario(base, labelers, batch, seconds, warmup, think_ms):
    samples = [{"next": [], "decisions": [], "decided": 0} for _ in range(labelers)]
    name = f"{'paced' if think_ms else 'busy'}-{labelers}-{time.time_ns()}"
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=labeler, args=(
        base, f"{name}-{i}", batch, until, warmup, samples[i], think_ms))
        for i in range(labelers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    decided = sum(s["decided"] for s in samples)
    return {"labelers": labelers, "think_ms": think_ms, "seconds": elapsed,
            "latency": {key: percentiles([v for s in samples for v in s[key]])
                        for key in ("next", "decisions")},
            "decisions_per_second": decided / elapsed,
            "load_average_1_min_after": os.getloadavg()[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 candidates, 5 s")
    parser.add_argument("--candidates", type=int, default=0)
    parser.add_argument("--labelers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10, help="tasks per GET /api/next")
    parser.add_argument("--seconds", type=float, default=0, help="per scenario")
    parser.add_argument("--warmup", type=int, default=5, help="loops per labeler left out")
    parser.add_argument("--think_ms", type=float, default=500.0,
                        help="mean pause between two loops in the 'paced' scenario")
    parser.add_argument("--workdir", default="", help="where the database is built (temp)")
    parser.add_argument("--db", default="", help="reuse a database built by an earlier run")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "bootstrap_api.json"))
    args = parser.parse_args(argv)
    candidates = args.candidates or (20_000 if args.quick else 1_000_000)
    seconds = args.seconds or (4.0 if args.quick else 60.0)
    if args.db:
        db, build_seconds = args.db, None
        with open_store(db) as store:
            candidates = store.count("task")
    else:
        workdir = args.workdir or tempfile.mkdtemp(prefix="bootstrap_api_")
        db = os.path.join(workdir, "bench.db")
        if os.path.exists(db):
            raise SystemExit(f"{db} exists; give an empty --workdir, or reuse it with --db")
        build_seconds = build(db, candidates)
    process, base = start_server(db)
    try:
        scenarios = {
            "busy": run_scenario(base, args.labelers, args.batch, seconds, args.warmup, 0.0),
            "paced": run_scenario(base, args.labelers, args.batch, seconds, args.warmup,
                                  args.think_ms),
            "one_labeler": run_scenario(base, 1, args.batch, seconds / 2, args.warmup, 0.0)}
        _, status = Client(base).timed("/api/status")
    finally:
        process.terminate()
        process.wait(30)
    busy = scenarios["busy"]["latency"]
    report = {
        "benchmark": "bootstrap_api", "quick": args.quick, "candidates": candidates,
        "batch": args.batch, "build_seconds": build_seconds,
        "db_megabytes": os.path.getsize(db) / 2**20,
        "scenarios": scenarios,
        "scenario_notes": {
            "busy": "each labeler loops next -> decisions with no pause (a stress test)",
            "paced": f"each labeler pauses {args.think_ms:g} ms +-50% between loops",
            "one_labeler": "one labeler, no pause: the latency of a request alone"},
        "decisions_recorded": sum(status["labelers"].values()),
        "goal_p95_ms": GOAL_MS,
        "meets_goal": all(busy[k].get("p95_ms", float("inf")) < GOAL_MS for k in busy),
        "goal_judged_on": "busy",
        "server": "werkzeug threaded (keras_fgvc.bootstrap.web.serve), separate process, "
                  "HTTP/1.1 keep-alive",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({name: {k: {q: round(v[q], 1) for q in ("p50_ms", "p95_ms", "p99_ms")}
                             for k, v in sc["latency"].items()}
                      for name, sc in scenarios.items()}, indent=2))
    if not args.workdir and not args.db:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        os.rmdir(workdir)
    return report


if __name__ == "__main__":
    main()
