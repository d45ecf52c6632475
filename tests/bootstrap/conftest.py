"""Fixtures of the bootstrapping tests: a real PostgreSQL server, databases, small projects.

`postgres_server` starts Debian's PostgreSQL 15 (initdb, pg_ctl) in a
temporary directory, listening only on a Unix socket there, once per test
session (as the `postgres` user when the tests run as root: PostgreSQL
refuses root). `db` is parametrized over SQLite and PostgreSQL: each test gets
a fresh database on both backends.
"""

import contextlib
import os
import pwd
import shutil
import struct
import subprocess
import tempfile
import threading
import uuid
import zlib

import pytest

PG_BIN = os.environ.get("BOOTSTRAP_PG_BIN", "/usr/lib/postgresql/15/bin")
CATEGORIES = (("ant", "a small insect with six legs"), ("bee", "a flying insect that makes honey"),
              ("cat", "a small furry animal with whiskers"))


def png_bytes(width, height, rgb):
    """A solid-colour RGB PNG (no imaging library needed)."""
    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _run(command):
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL 15 server on a Unix socket in a temporary directory: {'socket_dir'}."""
    initdb, pg_ctl = os.path.join(PG_BIN, "initdb"), os.path.join(PG_BIN, "pg_ctl")
    if not (os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK)):
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} "
                    "(install Debian's postgresql: `make test-services`)")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install .[bootstrap])")
    root = tempfile.mkdtemp(prefix="kfgvc-pg-")
    prefix = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    started = False
    try:
        _run(prefix + [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                       "--no-sync"])
        options = (f"-k {root} -c listen_addresses='' -F -c full_page_writes=off "
                   "-c max_connections=300")
        _run(prefix + [pg_ctl, "-D", data, "-l", os.path.join(root, "server.log"), "-w",
                       "-t", "60", "-o", options, "start"])
        started = True
        yield {"socket_dir": root}
    finally:
        if started:
            subprocess.run(prefix + [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _admin(server):
    import psycopg

    return psycopg.connect(host=server["socket_dir"], user="postgres", dbname="postgres",
                           autocommit=True)


@pytest.fixture
def postgres_db(postgres_server):
    """A fresh, empty PostgreSQL database: its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    with _admin(postgres_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@/{name}?host={postgres_server['socket_dir']}"
    with _admin(postgres_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """A fresh database on each backend: a SQLite file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "project.db")
    return request.getfixturevalue("postgres_db")


class Clock:
    """A store clock (`open_store(..., clock=)`) that stands still until a test moves `now`."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def make_project(db, root, n_pool=30, overlap=1, lease_seconds=600, uniform_every=3,
                 gold_every=0, seed_per_category=4, clock=None, status="labelling"):
    """A project with 3 categories, seed positives, one round of `n_pool` open tasks.

    Pool image i: truth = category i % 3 (or 'none' when i % 4 == 3); its task asks
    about category i % 3 except every 5th, which asks about the next one; score
    = 0.2 + 0.75 * (i % 10) / 9, selected when > 0.5; uniform when
    i % uniform_every == 0; gold when gold_every and i % gold_every == 0.
    Image files are small PNGs under `root`. Returns (store, info dict).
    """
    from keras_fgvc.bootstrap.store import open_store

    store = open_store(db, create=True, clock=clock)
    store.init_project({"seed_dir": os.path.join(root, "seed"),
                        "pool_dir": os.path.join(root, "pool"), "rounds": 2,
                        "overlap": overlap, "lease_seconds": lease_seconds})
    categories = store.add_categories(CATEGORIES)
    rows = []
    for c, category in enumerate(categories):
        for j in range(seed_per_category):
            path = os.path.join(root, "seed", category.name, f"{j}.png")
            rows.append((path, "seed", None, category.name, (40 + 60 * c, 10 * j, 90)))
    for i in range(n_pool):
        truth = "none" if i % 4 == 3 else categories[i % 3].name
        rows.append((os.path.join(root, "pool", f"p{i:04d}.png"), "pool", 1, truth,
                     (200, i % 256, 30)))
    for path, _, _, _, rgb in rows:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png_bytes(24, 24, rgb))
    store.add_images([{"path": p, "origin": o, "subset": s, "truth": t}
                      for p, o, s, t, _ in rows])
    ids = store.image_ids([r[0] for r in rows])
    by_name = {c.name: c for c in categories}
    store.add_members([(ids[p], by_name[t].id, "positive", 0)
                       for p, o, _, t, _ in rows if o == "seed"])
    store.start_round(1, model_version="r1-test")
    tasks = []
    seed_ids = [ids[r[0]] for r in rows if r[1] == "seed"]
    for i in range(n_pool):
        category = categories[(i % 3 + (i % 5 == 0)) % 3]
        score = 0.2 + 0.75 * (i % 10) / 9
        tasks.append({"image_id": ids[os.path.join(root, "pool", f"p{i:04d}.png")],
                      "category_id": category.id, "score": score, "selected": score > 0.5,
                      "uniform": i % uniform_every == 0,
                      "gold": bool(gold_every) and i % gold_every == 0,
                      "neighbors": seed_ids[:3]})
    store.open_tasks(1, tasks)
    store.update_round(1, status=status)
    return store, {"categories": categories, "ids": ids, "tasks": tasks,
                   "paths": [r[0] for r in rows]}


@pytest.fixture
def project(db, tmp_path):
    """A 30-task project on each backend (see `make_project`); closed afterwards."""
    store, info = make_project(db, str(tmp_path))
    yield store, info
    store.close()


@contextlib.contextmanager
def running_server(db, auth_token=None):
    """The page and API on a free loopback port in a thread: yields its base URL."""
    from keras_fgvc.bootstrap import web

    server = web.make_server(db, port=0, auth_token=auth_token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        server.app.extensions["bootstrap_store"].close()
