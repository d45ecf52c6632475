"""The bootstrapping project's storage: the one API every other part calls.

    store = open_store("project.db", create=True)   # or "postgresql://user@host/name"
    store.init_project({"seed_dir": ..., "pool_dir": ..., "rounds": 3})
    store.add_categories([("daisy", "a white flower ..."), ...])
    ...
    store.close()

Every method is one transaction: it either happens whole or not at all, and
the ones a retry can repeat (members, scores of a shard, tasks, decisions,
ingest) are idempotent. Bad input raises ValueError with a message before
anything is written. This file holds the project, categories, images and
members; the review queue (tasks, leases) is in `store_queue.py`, decisions
and ingest in `store_decisions.py`, rounds and scores in `store_rounds.py`,
the reports (status, quality, export) in `store_reports.py`.
"""

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap.store_checks import check_int, check_text, validate_settings
from keras_fgvc.bootstrap.store_decisions import DecisionsMixin
from keras_fgvc.bootstrap.store_queue import QueueMixin
from keras_fgvc.bootstrap.store_reports import ReportsMixin
from keras_fgvc.bootstrap.store_rounds import RoundsMixin

CHUNK = 5000
_RETRY_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock (PostgreSQL)
_SQLITE_LOCKS = {}  # database file -> the lock its writers in this process queue on
_SQLITE_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class Category:
    id: int
    index: int  # 0..N-1 in sorted name order: the training label
    name: str
    definition: str


def open_store(db, create=False, clock=None):
    """Open (with `create`, create) the bootstrapping database `db`; returns a Store.

    Args:
      db: a SQLite file path, ``sqlite:///FILE`` or ``postgresql://...``.
      create: create the schema when the database is empty.
      clock: a function returning the time in seconds (tests move it forward).
    """
    engine = schema.make_engine(db, create=create)
    try:
        schema.check_schema(engine, create=create)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, clock=clock)


class Store(RoundsMixin, QueueMixin, DecisionsMixin, ReportsMixin):
    """A bootstrapping project's database (see the module docstring). Thread-safe."""

    def __init__(self, engine, clock=None):
        self.engine = engine
        self.backend = schema.backend(engine)
        self.clock = clock or time.time
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Writers begin IMMEDIATE on SQLite (see db.py); the option rides on the engine.
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE") \
            if self.backend == "sqlite" else engine
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        self._settings = None
        self._categories = None
        self._exemplar_cache = {}
        self._reclaimed_at = float("-inf")
        if self.backend == "sqlite":
            with _SQLITE_LOCKS_GUARD:
                self._writer_lock = _SQLITE_LOCKS.setdefault(engine.url.database,
                                                             threading.Lock())
        else:
            self._writer_lock = contextlib.nullcontext()

    def close(self):
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # === Transactions ===
    @contextlib.contextmanager
    def _read(self):
        with self._sessions() as session:
            yield session

    def _write(self, work, retries=5, core=False):
        """Run `work(session)` in one write transaction and commit; returns its result.

        SQLite: one writer at a time: the threads of this process queue on a
        lock (fairer and faster than SQLite's polling busy handler), other
        processes wait on the busy timeout (BEGIN IMMEDIATE). PostgreSQL:
        retried on a serialization failure or deadlock. With `core`, `work`
        gets a Core Connection instead of an ORM Session: /api/next and
        /api/decisions run only Core statements, and a Session would add 0.2 ms
        to each (a tenth of their CPU time).
        """
        for attempt in range(retries):
            try:  # closing the Connection or Session rolls back what was not committed
                with self._writer_lock, (self._writer.connect() if core
                                         else self._write_sessions()) as session:
                    result = work(session)
                    session.commit()
                    return result
            except DBAPIError as e:
                state = getattr(e.orig, "sqlstate", None)
                if state not in _RETRY_SQLSTATES or attempt == retries - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    # === Project ===
    def init_project(self, settings):
        """Write the project settings (defaults filled in) once; refuses a second time."""
        settings = validate_settings(settings)

        def work(session):
            if session.get(schema.Meta, "settings") is not None:
                raise ValueError("this bootstrapping project is already initialised")
            session.add(schema.Meta(key="settings", value=json.dumps(settings, sort_keys=True)))

        self._write(work)
        self._settings = settings

    def settings(self):
        if self._settings is None:
            with self._read() as session:
                value = session.scalar(select(schema.Meta.value)
                                       .where(schema.Meta.key == "settings"))
            if value is None:
                raise ValueError("the bootstrapping project is not initialised; run `init`")
            self._settings = json.loads(value)
        return dict(self._settings)

    # === Categories ===
    def add_categories(self, categories):
        """Add the categories [(name, definition)]; index = position in sorted name order.

        Idempotent: the same names again return the existing categories;
        different names once categories exist raise ValueError.
        """
        rows = {}
        for item in categories:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError(f"a category is (name, definition), got {item!r}")
            name, definition = item
            name = check_text(name, "category name").strip()
            definition = "" if definition is None else check_text(definition, "definition", True)
            if name in rows:
                raise ValueError(f"category {name!r} given twice")
            rows[name] = definition
        if not rows:
            raise ValueError("no categories given")

        def work(session):
            existing = session.scalars(select(schema.Category)).all()
            if existing:
                if {c.name for c in existing} != set(rows):
                    names = sorted(c.name for c in existing)
                    raise ValueError(f"the project already has categories {names}; "
                                     f"cannot add {sorted(rows)}")
                return
            for index, name in enumerate(sorted(rows)):
                session.add(schema.Category(index=index, name=name, definition=rows[name]))

        self._write(work)
        self._categories = None
        return self.categories()

    def categories(self):
        """All categories, by index."""
        if self._categories is None:
            with self._read() as session:
                rows = session.scalars(select(schema.Category)
                                       .order_by(schema.Category.index)).all()
            cached = [Category(r.id, r.index, r.name, r.definition) for r in rows]
            if not cached:
                return []
            self._categories = cached
        return list(self._categories)

    def _category_by_name(self, name):
        for category in self.categories():
            if category.name == name:
                return category
        raise ValueError(f"unknown category {name!r}; the project has "
                         f"{[c.name for c in self.categories()]}")

    def _category_by_id(self):
        return {c.id: c for c in self.categories()}

    # === Images ===
    def add_images(self, rows):
        """Add images: iterable of dict(path, origin, subset, truth). One transaction.

        `path` must be absolute. A path already stored with the same fields is
        skipped (a rerun adds nothing); with other fields it is an error.
        """
        clean, seen = [], set()
        for row in rows:
            if not isinstance(row, dict) or "path" not in row or "origin" not in row:
                raise ValueError(f"an image row is dict(path, origin, subset, truth), got {row!r}")
            unknown = set(row) - {"path", "origin", "subset", "truth"}
            if unknown:
                raise ValueError(f"unknown image fields {sorted(unknown)} in {row!r}")
            path = check_text(row["path"], "image path")
            if not os.path.isabs(path):
                raise ValueError(f"image paths must be absolute, got {path!r}")
            if row["origin"] not in schema.ORIGINS:
                raise ValueError(f"origin must be one of {schema.ORIGINS}, got {row['origin']!r}")
            subset = row.get("subset")
            if subset is not None:
                subset = check_int(subset, f"subset of {path}", 1)
            truth = row.get("truth")
            if truth is not None:
                check_text(truth, f"truth of {path}")
            if path in seen:
                raise ValueError(f"image {path} given twice")
            seen.add(path)
            clean.append({"path": path, "origin": row["origin"], "subset": subset,
                          "truth": truth})

        def work(session):
            fresh = []
            for start in range(0, len(clean), CHUNK):
                chunk = clean[start:start + CHUNK]
                stored = {r.path: r for r in session.execute(
                    select(schema.Image.path, schema.Image.origin, schema.Image.subset,
                           schema.Image.truth)
                    .where(schema.Image.path.in_([c["path"] for c in chunk])))}
                for c in chunk:
                    old = stored.get(c["path"])
                    if old is None:
                        fresh.append(c)
                    elif (old.origin, old.subset, old.truth) != (c["origin"], c["subset"],
                                                                 c["truth"]):
                        raise ValueError(f"image {c['path']} is already stored as "
                                         f"origin={old.origin} subset={old.subset} "
                                         f"truth={old.truth}")
            for start in range(0, len(fresh), CHUNK):
                session.execute(schema.Image.__table__.insert(), fresh[start:start + CHUNK])

        self._write(work)

    def image_ids(self, paths):
        """{path: image id} for the stored paths among `paths`."""
        paths = list(paths)
        out = {}
        with self._read() as session:
            for start in range(0, len(paths), 500):
                out.update(session.execute(
                    select(schema.Image.path, schema.Image.id)
                    .where(schema.Image.path.in_(paths[start:start + 500]))).tuples().all())
        return out

    def images(self, origin=None, subset=None):
        """[(id, path, truth)] by id, optionally of one origin and pool subset."""
        if origin is not None and origin not in schema.ORIGINS:
            raise ValueError(f"origin must be one of {schema.ORIGINS}, got {origin!r}")
        query = select(schema.Image.id, schema.Image.path, schema.Image.truth)
        if origin is not None:
            query = query.where(schema.Image.origin == origin)
        if subset is not None:
            query = query.where(schema.Image.subset == check_int(subset, "subset"))
        with self._read() as session:
            return [tuple(r) for r in session.execute(query.order_by(schema.Image.id))]

    def image_path(self, image_id):
        """The stored (absolute) path of image `image_id`; KeyError if there is none."""
        image_id = check_int(image_id, "image_id")
        with self._read() as session:
            path = session.scalar(select(schema.Image.path).where(schema.Image.id == image_id))
        if path is None:
            raise KeyError(f"no image with id {image_id}")
        return path

    # === Members (S_i, H_i, background) ===
    def add_members(self, rows):
        """Add members: iterable of (image_id, category_id | None, kind, round); returns added.

        'positive' and 'hard_negative' need a category, 'background' has none.
        Idempotent: a member already stored is not added again.
        """
        clean = [self._member_row(row) for row in rows]
        return self._write(lambda session: self._insert_members(session, clean))

    def _member_row(self, row):
        if not isinstance(row, (tuple, list)) or len(row) != 4:
            raise ValueError(f"a member is (image_id, category_id, kind, round), got {row!r}")
        image_id, category_id, kind, round_index = row
        image_id = check_int(image_id, "image_id")
        round_index = check_int(round_index, "round", 0)
        if kind not in schema.KINDS:
            raise ValueError(f"member kind must be one of {schema.KINDS}, got {kind!r}")
        if (kind == "background") != (category_id is None):
            raise ValueError(f"a {kind} member {'has no' if kind == 'background' else 'needs a'} "
                             f"category, got category_id={category_id!r}")
        if category_id is not None:
            category_id = check_int(category_id, "category_id")
            if category_id not in self._category_by_id():
                raise ValueError(f"unknown category_id {category_id}")
        return {"image_id": image_id, "category_id": category_id,
                "category_key": category_id or 0, "kind": kind, "round": round_index}

    @staticmethod
    def _insert_members(session, rows):
        fresh, seen = [], set()
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            stored = set(session.execute(
                select(schema.Member.image_id, schema.Member.category_key, schema.Member.kind)
                .where(schema.Member.image_id.in_({r["image_id"] for r in chunk}))).tuples().all())
            for r in chunk:
                key = (r["image_id"], r["category_key"], r["kind"])
                if key not in stored and key not in seen:
                    seen.add(key)
                    fresh.append(r)
        known = set(session.scalars(select(schema.Image.id).where(
            schema.Image.id.in_({r["image_id"] for r in fresh})))) if fresh else set()
        missing = sorted({r["image_id"] for r in fresh} - known)
        if missing:
            raise ValueError(f"unknown image ids {missing[:10]}")
        for start in range(0, len(fresh), CHUNK):
            session.execute(schema.Member.__table__.insert(), fresh[start:start + CHUNK])
        return len(fresh)

    def members(self, max_round, kind=None):
        """[(image_id, path, category_index | None, kind, round)] with round <= max_round."""
        max_round = check_int(max_round, "max_round", 0)
        if kind is not None and kind not in schema.KINDS:
            raise ValueError(f"member kind must be one of {schema.KINDS}, got {kind!r}")
        m, i, c = schema.Member, schema.Image, schema.Category
        query = (select(m.image_id, i.path, c.index, m.kind, m.round)
                 .join(i, i.id == m.image_id).outerjoin(c, c.id == m.category_id)
                 .where(m.round <= max_round).order_by(m.id))
        if kind is not None:
            query = query.where(m.kind == kind)
        with self._read() as session:
            return [tuple(r) for r in session.execute(query)]

    def count(self, table):
        """Rows in `table` (a name from db.py), for tests and reports."""
        model = {m.__tablename__: m for m in schema.Base.__subclasses__()}.get(table)
        if model is None:
            raise ValueError(f"unknown table {table!r}")
        with self._read() as session:
            return session.scalar(select(func.count()).select_from(model))
