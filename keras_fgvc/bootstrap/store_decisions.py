"""Decisions of the Store: record, undo, outcomes (majority vote) and ingest into S_i / H_i.

A decision is one transaction, idempotent per (task, labeler): re-posting
replaces that labeler's decision. In the same transaction the task's lease is
marked decided and its `outcome` (the majority vote once `overlap` labelers
decided; a tie is 'unsure') and `open` flag are brought up to date. A decision
from a labeler without a lease on the task (theirs lapsed, or a script that
never asked for it) takes a free slot if there is one, or else the slot of
another labeler's lapsed, undecided lease (as the queue would give it away
next); when all `overlap` slots are held by others' live or decided leases it
is not recorded (reported as skipped), so a late vote can never outvote the
labelers the task went to.

On PostgreSQL the tasks are locked in id order first (SELECT ... FOR UPDATE),
so concurrent decisions on one task queue instead of racing, then a shared
transaction-level advisory lock is taken per round of theirs; `ingest` takes
the round's advisory lock exclusively before it reads the outcomes. A decision
and the ingest of its round thus never interleave: the decision lands before
the round closes (and is ingested) or is refused after. Advisory locks, not
row locks on the round: a waiting ingest queues new decisions behind it (a
stream of FOR SHARE row locks would hold it off indefinitely), and no row is
written per decision.
"""

from collections import Counter, defaultdict

from sqlalchemy import bindparam, delete, func, select, update

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap.stats import majority_vote
from keras_fgvc.bootstrap.store_checks import check_decisions, check_int, check_labeler
from keras_fgvc.bootstrap.store_queue import A, R, T, ids_param, lowest_free

D = schema.Decision.__table__
_S = schema.Score.__table__
# A task beside its image's score row of the same round (one at most: uq_score), and
# whether it asks the score's argmax (a round scored before the probes has none: yes).
WITH_SCORE = T.outerjoin(_S, (_S.c.round == T.c.round) & (_S.c.image_id == T.c.image_id))
ASKS_ARGMAX = (_S.c.category_id.is_(None) | (_S.c.category_id == T.c.category_id)).label(
    "asks_argmax")
# Tasks with their round, their leases and the leases' decisions (every decision
# has its lease): one round trip.
_TASKS = (select(T.c.id, T.c.round, T.c.taken, T.c.outcome, R.c.status, R.c.model_version,
                 A.c.id.label("lease_id"), A.c.labeler, A.c.slot, A.c.decided, A.c.assigned_at,
                 D.c.id.label("decision_id"), D.c.decision)
          .select_from(T.join(R, R.c.index == T.c.round).outerjoin(A, A.c.task_id == T.c.id)
                       .outerjoin(D, (D.c.task_id == A.c.task_id)
                                  & (D.c.labeler == A.c.labeler)))
          .where(T.c.id.in_(ids_param())).order_by(T.c.id))
_LOCK = select(T.c.id).where(T.c.id.in_(ids_param())).order_by(T.c.id).with_for_update()
ROUND_LOCK = 0x6B66  # first key of the rounds' advisory locks (the second: the round)
_ROUNDS_OF = select(T.c.round.label("r")).where(T.c.id.in_(ids_param())).distinct().subquery()
_LOCK_ROUNDS = (select(func.pg_advisory_xact_lock_shared(ROUND_LOCK, _ROUNDS_OF.c.r))
                .order_by(_ROUNDS_OF.c.r))
_CHANGE = update(D).where(D.c.id == bindparam("b_id")).values(
    decision=bindparam("b_decision"), seconds=bindparam("b_seconds"),
    created_at=bindparam("b_created_at"), model_version=bindparam("b_model_version"))
_DECIDED = update(A).where(A.c.id.in_(ids_param())).values(decided=True)


def settle(votes, taken, overlap):
    """(outcome, open) of a task with these votes and `taken` slots."""
    return (majority_vote(votes) if len(votes) >= overlap else None), taken < overlap


_SET_TASK = (update(T).where(T.c.id == bindparam("b_id"))
             .values(taken=bindparam("b_taken"), open=bindparam("b_open"),
                     outcome=bindparam("b_outcome")))
# While `taken` stays, so does `open` (= taken < overlap; overlap is fixed at `init`
# and never changes): leaving both out of the SET list spares the two queue indexes
# (a third of the pages a decision writes).
_SET_OUTCOME = update(T).where(T.c.id == bindparam("b_id")).values(
    outcome=bindparam("b_outcome"))


def _lapsed_lease(leases, task_id, cutoff):
    """The oldest undecided lease on `task_id` taken before `cutoff`, or None."""
    lapsed = [lease for (tid, _), lease in leases.items()
              if tid == task_id and not lease.decided and lease.assigned_at < cutoff]
    return min(lapsed, key=lambda lease: lease.assigned_at, default=None)


class DecisionsMixin:
    """Decisions and ingest (mixed into Store)."""

    def record_decisions(self, decisions, report=False):
        """Record decisions [dict(task_id, labeler, decision, seconds)]; returns the count.

        Everything is checked first; any bad item (malformed, unknown task,
        closed round) raises ValueError and nothing is written. Re-posting a
        (task, labeler) pair replaces that labeler's decision (idempotent).
        `seconds` (time taken) may be missing or null. A decision on a task
        whose `overlap` slots went to other labelers is skipped (module
        docstring); with `report`, returns ``{"recorded": count, "skipped":
        [{"task_id", "labeler", "reason"}]}`` instead of the count.
        """
        items = check_decisions(decisions)
        if not items:
            return {"recorded": 0, "skipped": []} if report else 0
        settings = self.settings()
        overlap = settings["overlap"]

        def work(session):
            tasks, rows = self._lock_tasks(session, {item["task_id"] for item in items})
            for task in tasks.values():
                if task.status == "closed":
                    raise ValueError(f"task {task.id} belongs to round {task.round}, which is "
                                     "closed (ingested); its decisions can no longer change")
            leases, votes = {}, defaultdict(dict)
            for row in rows:
                if row.lease_id is not None:
                    leases[(row.id, row.labeler)] = row
                if row.decision is not None:
                    votes[row.id][row.labeler] = row.decision
            used = defaultdict(set)
            for (task_id, _), lease in leases.items():
                used[task_id].add(lease.slot)
            taken = {task_id: task.taken for task_id, task in tasks.items()}
            now = self.clock()
            cutoff = now - settings["lease_seconds"]
            new, changed, new_leases, decided, skipped, dropped = [], [], [], [], [], []
            for item in items:
                task_id, labeler = item["task_id"], item["labeler"]
                row = {"decision": item["decision"], "seconds": item["seconds"],
                       "created_at": now, "model_version": tasks[task_id].model_version}
                lease = leases.get((task_id, labeler))
                if lease is None and taken[task_id] >= overlap:
                    lapsed = _lapsed_lease(leases, task_id, cutoff)
                    if lapsed is not None:  # reclaim it here, as the queue would
                        del leases[(task_id, lapsed.labeler)]
                        used[task_id].discard(lapsed.slot)
                        dropped.append(lapsed.lease_id)
                        taken[task_id] -= 1
                if lease is None and taken[task_id] >= overlap:
                    skipped.append({"task_id": task_id, "labeler": labeler, "reason": (
                        f"task {task_id} went to other labelers (its {overlap} slot(s) are "
                        f"taken; {labeler}'s lease lapsed or was never given): not recorded")})
                    continue
                if lease is not None and lease.decision_id is not None:
                    changed.append({"b_" + k: v for k, v in row.items()}
                                   | {"b_id": lease.decision_id})
                else:
                    new.append(dict(row, task_id=task_id, labeler=labeler))
                votes[task_id][labeler] = item["decision"]
                if lease is None:  # no lease (lapsed, or a script): take a slot now
                    slot = lowest_free(used[task_id])
                    used[task_id].add(slot)
                    new_leases.append({"task_id": task_id, "slot": slot, "labeler": labeler,
                                       "assigned_at": now, "decided": True})
                    taken[task_id] += 1
                elif not lease.decided:
                    decided.append(lease.lease_id)
            if dropped:  # before the new leases take their slots
                session.execute(delete(A).where(A.c.id.in_(dropped)))
            if new:
                session.execute(D.insert(), new)
            if changed:
                session.execute(_CHANGE, changed)
            if new_leases:
                session.execute(A.insert(), new_leases)
            if decided:
                session.execute(_DECIDED, {"ids": decided})
            retaken, outcomes = [], []
            for task_id, task in tasks.items():
                outcome, is_open = settle(list(votes[task_id].values()), taken[task_id],
                                          overlap)
                if taken[task_id] != task.taken:
                    retaken.append({"b_id": task_id, "b_taken": taken[task_id],
                                    "b_open": is_open, "b_outcome": outcome})
                elif outcome != task.outcome:
                    outcomes.append({"b_id": task_id, "b_outcome": outcome})
            if retaken:
                session.execute(_SET_TASK, retaken)
            if outcomes:
                session.execute(_SET_OUTCOME, outcomes)
            recorded = len(items) - len(skipped)
            return {"recorded": recorded, "skipped": skipped} if report else recorded

        return self._write(work, core=True)

    def _lock_tasks(self, session, task_ids):
        """({id: row}, rows) of these tasks, locked on PostgreSQL: a row (see `_TASKS`) a
        lease, or one with lease_id None; ValueError if a task is unknown."""
        params = {"ids": list(task_ids)}
        if self.backend == "postgresql":
            # Lock first, then read: a locking SELECT that waited for a lock sees the
            # locked rows as now committed, but the rows it joins as they were before.
            # Each round's advisory lock, shared: an ingest of one (exclusive) waits for
            # this transaction, or this one for it and then reads the round closed.
            session.execute(_LOCK, params)
            session.execute(_LOCK_ROUNDS, params)
        rows = session.execute(_TASKS, params).all()
        tasks = {row.id: row for row in rows}
        missing = sorted(set(task_ids) - set(tasks))
        if missing:
            raise ValueError(f"unknown task_id {missing[0]}" if len(missing) == 1
                             else f"unknown task_ids {missing[:20]}")
        return tasks, rows

    def undo(self, task_id, labeler):
        """Take back `labeler`'s decision on `task_id`; the task stays leased to them.

        Returns False when there was no decision to undo.
        """
        task_id, labeler = check_int(task_id, "task_id"), check_labeler(labeler)
        overlap = self.settings()["overlap"]

        def work(session):
            task = self._lock_tasks(session, {task_id})[0][task_id]
            if task.status == "closed":
                raise ValueError(f"task {task_id} belongs to round {task.round}, which is closed")
            gone = session.execute(delete(D).where(D.c.task_id == task_id,
                                                   D.c.labeler == labeler)).rowcount
            if not gone:
                return False
            session.execute(update(A).where(A.c.task_id == task_id, A.c.labeler == labeler)
                            .values(decided=False, assigned_at=self.clock()))
            votes = list(session.scalars(select(D.c.decision).where(D.c.task_id == task_id)))
            outcome, is_open = settle(votes, task.taken, overlap)
            session.execute(_SET_TASK, {"b_id": task_id, "b_taken": task.taken,
                                        "b_open": is_open, "b_outcome": outcome})
            return True

        return self._write(work)

    # === Outcomes and ingest ===
    def outcomes(self, round_index):
        """[(task, outcome)] of a round by task id: outcome is the majority decision
        ('accept' | 'reject' | 'unsure') or None while pending. A task's `category` is the
        one it asks about; `argmax_category` the model's (they differ for a recall probe:
        `asks_argmax` False)."""
        round_index = check_int(round_index, "round", 1)
        i = schema.Image.__table__
        categories = self._category_by_id()
        with self._read() as session:
            self._round_row(session, round_index)
            rows = session.execute(
                select(T.c.id, T.c.image_id, T.c.category_id, T.c.score, T.c.selected,
                       T.c.uniform, T.c.gold, T.c.outcome, i.c.path,
                       _S.c.category_id.label("argmax_id"))
                .select_from(WITH_SCORE.join(i, i.c.id == T.c.image_id))
                .where(T.c.round == round_index).order_by(T.c.id)).all()
        out = []
        for row in rows:
            category = categories[row.category_id]
            argmax = categories[row.argmax_id] if row.argmax_id is not None else category
            out.append(({"task_id": row.id, "image_id": row.image_id, "path": row.path,
                         "category": category.name, "category_id": category.id,
                         "category_index": category.index, "score": row.score,
                         "selected": bool(row.selected), "uniform": bool(row.uniform),
                         "gold": bool(row.gold), "argmax_category": argmax.name,
                         "asks_argmax": argmax.id == category.id}, row.outcome))
        return out

    def ingest(self, round_index, allow_pending=False):
        """Close round i: accepted tasks join S_i, rejected selected ones join H_i.

        'unsure' and tied tasks are left out, and so are rejected tasks of the
        uniform sample below the threshold (not confident mistakes) and rejected
        recall probes (a question about another category than the argmax). Refuses
        while tasks are pending unless `allow_pending` (they are then left out).
        Idempotent: a second run adds nothing. Returns a summary dict.
        """
        round_index = check_int(round_index, "round", 1)
        names = {c.id: c.name for c in self.categories()}

        def work(session):
            # The round's advisory lock on PostgreSQL (module docstring); SQLite's
            # single writer already keeps decisions out until this transaction ends.
            if self.backend == "postgresql":
                session.execute(select(func.pg_advisory_xact_lock(ROUND_LOCK, round_index)))
            row = self._round_row(session, round_index)
            counts = Counter()
            for category_id, outcome, selected, n in session.execute(
                    select(T.c.category_id, T.c.outcome, T.c.selected, func.count())
                    .where(T.c.round == round_index)
                    .group_by(T.c.category_id, T.c.outcome, T.c.selected)):
                counts[(category_id, outcome, bool(selected))] += n
            pending = Counter()
            for (category_id, outcome, _), n in counts.items():
                if outcome is None:
                    pending[names[category_id]] += n
            if pending and not allow_pending:
                raise ValueError(f"round {round_index} still has {sum(pending.values())} "
                                 f"pending tasks ({dict(sorted(pending.items()))}); label them "
                                 "or ingest with allow_pending")
            members = []
            # A hard negative is a rejected answer to the selection's own question: a
            # selected task asking its argmax (not a recall probe of another category).
            for image_id, category_id, outcome, selected, asks_argmax in session.execute(
                    select(T.c.image_id, T.c.category_id, T.c.outcome, T.c.selected,
                           ASKS_ARGMAX).select_from(WITH_SCORE)
                    .where(T.c.round == round_index, T.c.outcome.in_(("accept", "reject")))):
                kind = "positive" if outcome == "accept" else \
                    "hard_negative" if selected and asks_argmax else None
                if kind:
                    members.append({"image_id": image_id, "category_id": category_id,
                                    "category_key": category_id, "kind": kind,
                                    "round": round_index})
            added = self._insert_members(session, members)
            if row.status != "closed":
                row.status, row.closed_at = "closed", self.clock()

            def total(outcome):
                return sum(n for (_, o, _), n in counts.items() if o == outcome)

            return {"round": round_index, "accepted": total("accept"),
                    "rejected": total("reject"),
                    "hard_negatives": sum(m["kind"] == "hard_negative" for m in members),
                    "unsure": total("unsure"), "pending": sum(pending.values()),
                    "added": added, "pending_by_category": dict(sorted(pending.items()))}

        summary = self._write(work)
        self._exemplar_cache.clear()
        return summary
