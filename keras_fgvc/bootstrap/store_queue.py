"""The review queue of the Store: opening tasks and leasing them to labelers.

A task is leased to at most `overlap` labelers at once (one assignment row
per slot, UNIQUE(task, slot) and UNIQUE(task, labeler)); a lease lapses after
`lease_seconds` unless decided, and its slot goes back to the queue. The queue
is the index (round, open, order_key): `open` is true while a task has a free
slot. Decisions, undo and ingest are in `store_decisions.py`.

Concurrency: on SQLite writers are serialised (BEGIN IMMEDIATE); on PostgreSQL
the queue takes its tasks with SELECT ... FOR UPDATE SKIP LOCKED, and a
decision locks its tasks in id order, so two labelers never take the same slot.
"""

import hashlib
import random
import struct
from collections import Counter, defaultdict

from sqlalchemy import bindparam, delete, false, literal_column, select, true, update

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap.store_checks import check_flag, check_int, check_labeler, check_number

MAX_BATCH = 1000
RECLAIM_EVERY = 1.0  # seconds between two looks for lapsed leases
CHUNK = 5000
EXEMPLARS = 6


def order_key(seed, round_index, image_id):
    """A uniform [0, 1) number fixed by (seed, round, image): the queue order, hiding the source."""
    digest = hashlib.blake2b(f"{seed}:{round_index}:{image_id}".encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] / 2.0**64


T, A, R = schema.Task.__table__, schema.Assignment.__table__, schema.Round.__table__
TASK_COLUMNS = (T.c.id, T.c.round, T.c.image_id, T.c.category_id, T.c.score, T.c.neighbors,
                T.c.taken)


def ids_param(name="ids"):
    return bindparam(name, expanding=True)


def locking(statement, **kwargs):
    """{False: statement, True: statement FOR UPDATE [SKIP LOCKED]} (True: PostgreSQL)."""
    return {False: statement, True: statement.with_for_update(**kwargs)}


# The hot statements are built once: building a statement costs more than running it.
# A labeler's live leases (a few) are found from the assignment side. The task
# columns are wrapped (`x + 0`, SQLite's documented way to disqualify an index) so
# SQLite cannot drive the join from a task index instead: from ix_task_outcome it
# walked every pending task of the category (100,000 of 1M: 48 ms a request).
# PostgreSQL plans the same statement from the assignment side either way.
_PLAIN = literal_column("0")
_MINE = {category: locking(
    select(*TASK_COLUMNS, A.c.id.label("lease_id"))
    .select_from(T.join(A, A.c.task_id == T.c.id))
    .where(A.c.labeler == bindparam("labeler"), A.c.decided == false(),
           (T.c.round + _PLAIN).in_(ids_param("rounds")), T.c.outcome.is_(None),
           *([T.c.category_id + _PLAIN == bindparam("category_id")] if category else []))
    .order_by(T.c.round, T.c.order_key).limit(bindparam("n")), skip_locked=True, of=T)
    for category in (False, True)}
# SKIP LOCKED on one's own leases too: a lease whose task a decision holds (being decided,
# e.g. from the labeler's other tab) is left out of this page instead of waited for. A wait
# there, while this transaction holds the tasks it reclaimed, could close a deadlock with a
# decision batch waiting on one of those.
_TAKE = {category: locking(
    select(*TASK_COLUMNS)
    .where(T.c.round == bindparam("round"), T.c.open == true(),
           ~select(A.c.id).where(A.c.task_id == T.c.id,
                                 A.c.labeler == bindparam("labeler")).exists(),
           *([T.c.category_id == bindparam("category_id")] if category else []))
    .order_by(T.c.order_key).limit(bindparam("n")), skip_locked=True, of=T)
    for category in (False, True)}
_ROUNDS = select(R.c.index, R.c.status, R.c.model_version).order_by(R.c.index)
_LABELLING = _ROUNDS.where(R.c.status == "labelling")
_ONE_ROUND = _ROUNDS.where(R.c.index == bindparam("round"))
_RENEW = update(A).where(A.c.id.in_(ids_param())).values(assigned_at=bindparam("now"))
_SLOTS = select(A.c.task_id, A.c.slot).where(A.c.task_id.in_(ids_param()))
_LEASE = update(T).where(T.c.id.in_(ids_param())).values(
    taken=T.c.taken + 1, open=(T.c.taken + 1) < bindparam("overlap"))
_LAPSED = select(A.c.task_id).where(A.c.decided == false(),
                                    A.c.assigned_at < bindparam("cutoff")).limit(500)
_LOCK_IDS = locking(select(T.c.id).where(T.c.id.in_(ids_param())), skip_locked=True)
_GONE = select(A.c.id, A.c.task_id).where(A.c.task_id.in_(ids_param()), A.c.decided == false(),
                                          A.c.assigned_at < bindparam("cutoff"))
_DROP = delete(A).where(A.c.id.in_(ids_param()))
_FREED = T.c.taken - bindparam("b_freed")
_FREE = update(T).where(T.c.id == bindparam("b_id")).values(
    taken=_FREED, open=_FREED < bindparam("b_overlap"))


def lowest_free(used):
    """The lowest slot number not in `used`."""
    slot = 0
    while slot in used:
        slot += 1
    return slot


class QueueMixin:
    """Tasks and decisions (mixed into Store)."""

    def open_tasks(self, round_index, rows):
        """Open review tasks of round `round_index`; returns how many are new.

        rows: dicts (image_id, category_id, score, selected, uniform, gold,
        neighbors: up to a few image ids or None). Idempotent per (round, image).
        """
        round_index = check_int(round_index, "round", 1)
        seed = self.settings()["seed"]
        categories = self._category_by_id()
        clean, seen = [], set()
        keys = {"image_id", "category_id", "score", "selected", "uniform", "gold", "neighbors"}
        for row in rows:
            if not isinstance(row, dict) or set(row) - keys or \
                    not {"image_id", "category_id", "score"} <= set(row):
                raise ValueError(f"a task row is dict({', '.join(sorted(keys))}), got {row!r}")
            image_id = check_int(row["image_id"], "image_id")
            category_id = check_int(row["category_id"], f"category_id of image {image_id}")
            if category_id not in categories:
                raise ValueError(f"unknown category_id {category_id}")
            if image_id in seen:
                raise ValueError(f"image {image_id} has two tasks in round {round_index}")
            seen.add(image_id)
            neighbors = row.get("neighbors")
            if neighbors is not None:
                if not isinstance(neighbors, (list, tuple)):
                    raise ValueError(f"neighbors must be a list of image ids, got {neighbors!r}")
                neighbors = [check_int(n, "neighbor image id") for n in neighbors]
            clean.append({
                "round": round_index, "image_id": image_id, "category_id": category_id,
                "score": check_number(row["score"], f"score of image {image_id}"),
                "selected": check_flag(row.get("selected", False), "selected"),
                "uniform": check_flag(row.get("uniform", False), "uniform"),
                "gold": check_flag(row.get("gold", False), "gold"),
                "order_key": order_key(seed, round_index, image_id),
                "neighbors": neighbors, "taken": 0, "open": True, "outcome": None})

        # Stored in queue order, so the tasks handed out together (and their leases and
        # decisions) share pages: a batch dirties a few pages instead of one a task.
        clean.sort(key=lambda row: row["order_key"])

        def work(session):
            self._round_row(session, round_index, open_only=True)
            t, i = schema.Task, schema.Image
            added = 0
            for start in range(0, len(clean), CHUNK):
                chunk = clean[start:start + CHUNK]
                ids = [row["image_id"] for row in chunk]
                stored = set(session.scalars(select(t.image_id).where(
                    t.round == round_index, t.image_id.in_(ids))))
                fresh = [row for row in chunk if row["image_id"] not in stored]
                known = set(session.scalars(select(i.id).where(i.id.in_(ids))))
                if set(ids) - known:
                    raise ValueError(f"unknown image ids {sorted(set(ids) - known)[:10]}")
                if fresh:
                    session.execute(t.__table__.insert(), fresh)
                added += len(fresh)
            return added

        return self._write(work)

    # === Handing out tasks ===
    # The hot paths below use Core statements (no ORM unit of work): one
    # next / decisions call is a handful of indexed statements.
    def next_tasks(self, labeler, n, category=None, round=None):
        """Lease up to `n` tasks to `labeler`; returns task dicts (see `_task_dicts`).

        The labeler's own live leases come first (a reloaded page gets its
        tasks back), then new tasks in queue order from the rounds in status
        'labelling' (or round `round` only), optionally of one category.
        """
        labeler = check_labeler(labeler)
        n = check_int(n, "n", 1)
        if n > MAX_BATCH:
            raise ValueError(f"n must be <= {MAX_BATCH}, got {n}")
        category_id = None if category is None else self._category_by_name(category).id
        if round is not None:
            round = check_int(round, "round", 1)
        settings = self.settings()
        overlap, lease = settings["overlap"], settings["lease_seconds"]

        def work(session):
            now = self.clock()
            postgres = self.backend == "postgresql"
            self._reclaim(session, now - lease, overlap)
            if round is None:
                rounds = session.execute(_LABELLING).all()
            else:
                rounds = session.execute(_ONE_ROUND, {"round": round}).all()
                if not rounds or rounds[0].status == "closed":
                    raise ValueError(f"there is no open round {round}")
            if not rounds:
                return []
            versions = {r.index: r.model_version for r in rounds}
            params = {"labeler": labeler, "rounds": list(versions), "n": n,
                      "category_id": category_id}
            picked = session.execute(_MINE[category_id is not None][postgres], params).all()
            if picked:
                session.execute(_RENEW, {"ids": [r.lease_id for r in picked], "now": now})
            for round_index in versions:
                if len(picked) >= n:
                    break
                fresh = session.execute(_TAKE[category_id is not None][postgres],
                                        dict(params, round=round_index, n=n - len(picked))).all()
                self._lease(session, fresh, labeler, now, overlap)
                picked.extend(fresh)
            return self._task_dicts(session, picked, versions)

        return self._write(work, core=True)

    @staticmethod
    def _lease(session, tasks, labeler, now, overlap):
        if not tasks:
            return
        ids = [task.id for task in tasks]
        used = defaultdict(set)
        shared = [task.id for task in tasks if task.taken > 0]  # others hold slots
        if shared:
            for task_id, slot in session.execute(_SLOTS, {"ids": shared}):
                used[task_id].add(slot)
        session.execute(A.insert(), [
            {"task_id": task_id, "slot": lowest_free(used[task_id]), "labeler": labeler,
             "assigned_at": now, "decided": False} for task_id in ids])
        session.execute(_LEASE, {"ids": ids, "overlap": overlap})

    def _reclaim(self, session, cutoff, overlap):
        """Give the slots of lapsed leases (undecided, older than `cutoff`) back to the queue."""
        now = self.clock()
        if abs(now - self._reclaimed_at) < RECLAIM_EVERY:  # a lease lapses ~1 s late at most
            return
        self._reclaimed_at = now
        lapsed = set(session.scalars(_LAPSED, {"cutoff": cutoff}))
        if not lapsed:
            return
        locked = list(session.scalars(_LOCK_IDS[self.backend == "postgresql"],
                                      {"ids": list(lapsed)}))
        if not locked:
            return
        # Read again under the task locks: a decision may have come in meanwhile.
        gone = session.execute(_GONE, {"ids": locked, "cutoff": cutoff}).all()
        if not gone:
            return
        session.execute(_DROP, {"ids": [lease_id for lease_id, _ in gone]})
        freed = Counter(task_id for _, task_id in gone)
        session.execute(_FREE, [{"b_id": task_id, "b_freed": k, "b_overlap": overlap}
                                for task_id, k in freed.items()])

    def _exemplars(self, session, category_id, round_index):
        """Up to 6 image ids of S_{round-1} of the category, fixed per (category, round)."""
        key = (category_id, round_index)
        if key not in self._exemplar_cache:
            m = schema.Member
            ids = sorted(session.scalars(select(m.image_id).where(
                m.category_id == category_id, m.kind == "positive", m.round < round_index)))
            picked = random.Random(f"{category_id}:{round_index}").sample(
                ids, min(EXEMPLARS, len(ids)))
            self._exemplar_cache[key] = sorted(picked)
        return self._exemplar_cache[key]

    def _task_dicts(self, session, tasks, versions):
        """What /api/next returns for each task; nothing in it tells uniform or gold apart."""
        categories = self._category_by_id()
        out = []
        for task in tasks:
            category = categories[task.category_id]
            out.append({
                "task_id": task.id, "candidate_id": task.image_id,
                "image_url": f"/images/{task.image_id}", "category": category.name,
                "category_definition": category.definition, "score": task.score,
                "round": task.round, "model_version": versions.get(task.round),
                "exemplar_urls": [f"/images/{i}" for i in
                                  self._exemplars(session, task.category_id, task.round)],
                "neighbor_urls": [f"/images/{i}" for i in task.neighbors or []]})
        return out
