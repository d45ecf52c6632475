"""Reports of the Store: status counts, selection quality, agreement, gold accuracy, export.

Selection quality (`selection_quality`): the queue mixes a uniform sample of
the whole scored subset (above and below the threshold) into the tasks, each
asking about its recall probe (`selection.probe_distribution`: the argmax
with chance 1 - probe_share, else another category), so each round's
selection D_i (score > threshold, argmax category) gets estimates free of the
selection's own bias (recall is a ratio estimator: consistent, with the usual
small-sample bias of a ratio, which shrinks as 1 / n) of

- precision = P(the argmax is right | selected), from the uniform tasks that
  are selected and ask their argmax (a draw independent of the answer), with
  its 95% Wilson interval;
- recall = (images of D_i whose argmax is right) / (images of C_i in any of the
  categories), a ratio of two Horvitz-Thompson sums over the uniform tasks:
  a_u = [selected, asks its argmax] y_u / q_u and b_u = y_u / q_u, with y_u = 1
  for accept and q_u the chance its question was drawn
  (`stats.ratio_estimate`, delta-method 95% interval);

plus the acceptance rate (and count, ``selected_tasks``) of all selected
tasks that ask their argmax (every one is reviewed, so that is the
selection's precision as the labelers saw it). 'unsure' and pending tasks
are left out of every ratio. Per category (a task's asked category) and
overall. A round scored without probes (projects
made before them, or ``probe_share`` 0) asked only the argmax: its recall
counts only images the model placed in their own category, an upper bound,
and the report says so (``recall_method``: "argmax only (upper bound)").
The probes assume right answers: a false accept on a probe of chance q adds
1 / q to the denominator, so a labeler accepting wrong categories at rate e
lowers the estimate by about e (N - 1) per candidate against the true count
(`benchmarks/bootstrap_recall.py`).

Where gold items were decided (``gold_share`` > 0), each estimate also comes
corrected for the labelers' errors (``precision_corrected``,
``recall_corrected``: `stats.corrected_proportion`, `stats.corrected_ratio`),
with the false-accept and false-reject rates of the gold tasks' outcomes over
the whole project (``labeler_error``). The correction assumes a labeler errs
on a uniform task as often as on a gold one, whatever its question; its
interval carries the uncertainty of the gold rates, so few gold items give a
wide one.
"""

import datetime
import itertools
import math
from collections import Counter, defaultdict

from sqlalchemy import false, func, select

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap.stats import (
    cohen_kappa,
    corrected_proportion,
    corrected_ratio,
    gold_accuracy,
    proportion,
    ratio_estimate,
)
from keras_fgvc.bootstrap.store_checks import check_int
from keras_fgvc.bootstrap.store_decisions import ASKS_ARGMAX, WITH_SCORE

OUTCOME_NAMES = {None: "pending", "accept": "accepted", "reject": "rejected", "unsure": "unsure"}
_READ_HERE = object()  # selection_quality's default: read labeler_error itself
PROJECT_KEYS = ("rounds", "threshold", "overlap", "uniform_share", "probe_share", "gold_share",
                "lease_seconds", "config")


def _finite_or_none(value):
    return None if value is None or math.isnan(value) else value


def _quality(counts, uniform_rows, errors=None):
    """Precision / recall / acceptance, and both corrected for `errors`.

    counts: {(uniform, selected, asks_argmax, outcome): n} over every task;
    uniform_rows: [(selected, asks_argmax, outcome, q)] of the uniform tasks;
    errors: {'false_accept', 'false_reject'} `proportion` dicts from gold items
    (`ReportsMixin.labeler_error`), or None.
    """
    def n(selected=None, outcomes=("accept", "reject", "unsure", None)):
        return sum(v for (_, s, argmax, o), v in counts.items() if o in outcomes and argmax
                   and (selected is None or s == selected))

    decided = ("accept", "reject")
    hits = sum(1 for s, argmax, o, _ in uniform_rows if s and argmax and o == "accept")
    asked = sum(1 for s, argmax, o, _ in uniform_rows if s and argmax and o in decided)
    # Each decided uniform task: counts in the numerator, accepted, weight 1 / q.
    units = [(float(bool(s and argmax)), float(o == "accept"), 1.0 / (q or 1.0))
             for s, argmax, o, q in uniform_rows if o in decided]
    a = [own * y * w for own, y, w in units]
    b = [y * w for _, y, w in units]
    probed = any(q is not None and q < 1 for *_, q in uniform_rows)
    corrected = {}
    if errors is not None:
        columns = [list(column) for column in zip(*units)] or [[], [], []]
        corrected = {"precision_corrected": corrected_proportion(
                         hits, asked, errors["false_accept"], errors["false_reject"]),
                     "recall_corrected": corrected_ratio(
                         *columns, errors["false_accept"], errors["false_reject"])}
    return {"precision": proportion(hits, asked),
            "recall": ratio_estimate(a, b), **corrected,
            "recall_method": "probes" if probed else "argmax only (upper bound)",
            "selected_acceptance": proportion(n(True, ("accept",)), n(True, decided)),
            "uniform_tasks": len(uniform_rows),
            "uniform_decided": len(b),
            "selected_tasks": n(True)}


class ReportsMixin:
    """Status, quality and export (mixed into Store)."""

    def status(self):
        """Rounds with task counts per category (pending, accepted, rejected, unsure),
        category sizes (S and H over all rounds) and decisions per labeler."""
        settings = self.settings()
        categories = self.categories()
        names = {c.id: c.name for c in categories}
        t, a, m = schema.Task, schema.Assignment, schema.Member
        with self._read() as session:
            rounds = session.scalars(select(schema.Round).order_by(schema.Round.index)).all()
            counts = session.execute(select(t.round, t.category_id, t.outcome, func.count())
                                     .group_by(t.round, t.category_id, t.outcome)).all()
            leased = dict(session.execute(
                select(t.round, func.count()).join(a, a.task_id == t.id)
                .where(a.decided == false()).group_by(t.round)).tuples().all())
            members = session.execute(select(m.category_id, m.kind, m.round, func.count())
                                      .group_by(m.category_id, m.kind, m.round)).all()
            labelers = dict(session.execute(
                select(schema.Decision.labeler, func.count())
                .group_by(schema.Decision.labeler)).tuples().all())
        empty = dict.fromkeys(["tasks", *OUTCOME_NAMES.values()], 0)
        per_round = {r.index: {"index": r.index, "status": r.status,
                               "model_version": r.model_version, "started_at": r.started_at,
                               "closed_at": r.closed_at, "leased": leased.get(r.index, 0),
                               **empty, "categories": {}} for r in rounds}
        for round_index, category_id, outcome, n in counts:
            entry = per_round.get(round_index)
            if entry is None:
                continue
            cell = entry["categories"].setdefault(names[category_id], dict(empty))
            for target in (entry, cell):
                target["tasks"] += n
                target[OUTCOME_NAMES[outcome]] += n
        sizes = defaultdict(Counter)
        for category_id, kind, round_index, n in members:
            sizes[category_id][kind] += n
            if kind == "positive" and round_index == 0:
                sizes[category_id]["seed"] += n
        return {
            "project": {k: settings[k] for k in PROJECT_KEYS if k in settings},
            "categories": [{"name": c.name, "index": c.index, "definition": c.definition,
                            "seed": sizes[c.id]["seed"], "positives": sizes[c.id]["positive"],
                            "hard_negatives": sizes[c.id]["hard_negative"]}
                           for c in categories],
            "background": sizes[None]["background"],
            "rounds": list(per_round.values()),
            "labelers": dict(sorted(labelers.items())),
        }

    def selection_quality(self, round_index, errors=_READ_HERE):
        """Precision and recall of round i's selection (see the module docstring).

        `errors`: `labeler_error`'s result when the caller already has it (a report over
        every round reads the gold tasks once); by default read here.
        """
        round_index = check_int(round_index, "round", 1)
        names = {c.id: c.name for c in self.categories()}
        t, sc = schema.Task.__table__, schema.Score.__table__
        argmax, joined = ASKS_ARGMAX, WITH_SCORE
        with self._read() as session:
            self._round_row(session, round_index)
            grouped = session.execute(
                select(t.c.category_id, t.c.uniform, t.c.selected, argmax, t.c.outcome,
                       func.count()).select_from(joined).where(t.c.round == round_index)
                .group_by(t.c.category_id, t.c.uniform, t.c.selected, argmax,
                          t.c.outcome)).all()
            uniform = session.execute(
                select(t.c.category_id, t.c.selected, argmax, t.c.outcome, sc.c.probe_q)
                .select_from(joined).where(t.c.round == round_index, t.c.uniform)).all()
        overall, per_category = Counter(), defaultdict(Counter)
        for category_id, is_uniform, selected, asks_argmax, outcome, n in grouped:
            key = (bool(is_uniform), bool(selected), bool(asks_argmax), outcome)
            overall[key] += n
            per_category[names[category_id]][key] += n
        rows, rows_by_category = [], defaultdict(list)
        for category_id, selected, asks_argmax, outcome, q in uniform:
            row = (bool(selected), bool(asks_argmax), outcome, q)
            rows.append(row)
            rows_by_category[names[category_id]].append(row)
        if errors is _READ_HERE:
            errors = self.labeler_error()
        return {"round": round_index, "threshold": self.settings()["threshold"],
                "labeler_error": errors,
                "overall": _quality(overall, rows, errors),
                "categories": {name: _quality(per_category[name], rows_by_category[name],
                                              errors)
                               for name in sorted(per_category)}}

    def agreement(self):
        """Cohen's kappa for each pair of labelers over the tasks both decided."""
        d = schema.Decision
        with self._read() as session:
            shared = select(d.task_id).group_by(d.task_id).having(func.count() >= 2)
            rows = session.execute(select(d.task_id, d.labeler, d.decision)
                                   .where(d.task_id.in_(shared)).order_by(d.task_id)).all()
        pairs = defaultdict(lambda: ([], []))
        for _, group in itertools.groupby(rows, key=lambda r: r[0]):
            votes = sorted((labeler, decision) for _, labeler, decision in group)
            for (first, a), (second, b) in itertools.combinations(votes, 2):
                pairs[(first, second)][0].append(a)
                pairs[(first, second)][1].append(b)
        out = []
        for (first, second), (a, b) in sorted(pairs.items()):
            out.append({"labelers": [first, second], "n": len(a),
                        "observed_agreement": sum(x == y for x, y in zip(a, b)) / len(a),
                        "kappa": _finite_or_none(cohen_kappa(a, b))})
        return {"pairs": out, "tasks": len({r[0] for r in rows})}

    def gold(self):
        """Each labeler's accuracy on gold tasks (known truth), with a Wilson interval."""
        d, t, i, c = schema.Decision, schema.Task, schema.Image, schema.Category
        with self._read() as session:
            rows = session.execute(
                select(d.labeler, d.decision, i.truth, c.name)
                .join(t, t.id == d.task_id).join(i, i.id == t.image_id)
                .join(c, c.id == t.category_id)
                .where(t.gold.is_(True), i.truth.is_not(None))).all()
        return gold_accuracy((labeler, decision, "accept" if truth == name else "reject")
                             for labeler, decision, truth, name in rows)

    def labeler_error(self):
        """{'false_accept', 'false_reject'}: `proportion` dicts of the decided gold tasks'
        outcomes (the majority where overlap > 1) over the whole project: accepts among
        those whose right answer is reject, rejects among those whose right answer is
        accept. None where no gold task is decided."""
        t, i, c = schema.Task, schema.Image, schema.Category
        with self._read() as session:
            rows = session.execute(
                select(t.outcome, i.truth == c.name, func.count())
                .join(i, i.id == t.image_id).join(c, c.id == t.category_id)
                .where(t.gold.is_(True), i.truth.is_not(None),
                       t.outcome.in_(("accept", "reject")))
                .group_by(t.outcome, i.truth == c.name)).all()
        counts = Counter({(outcome, bool(right)): n for outcome, right, n in rows})
        if not counts:
            return None
        return {"false_accept": proportion(counts["accept", False],
                                           counts["accept", False] + counts["reject", False]),
                "false_reject": proportion(counts["reject", True],
                                           counts["reject", True] + counts["accept", True])}

    def quality(self):
        """What GET /api/quality returns: selection quality per round, agreement, gold."""
        errors = self.labeler_error()  # one read of the gold tasks for every round
        return {"overlap": self.settings()["overlap"],
                "rounds": [self.selection_quality(r["index"], errors) for r in self.rounds()],
                "agreement": self.agreement(), "gold": self.gold()}

    def iter_decisions(self):
        """Every decision as a dict (the JSONL export), by decision id; streams."""
        d, t, i, c = schema.Decision, schema.Task, schema.Image, schema.Category
        query = (select(d, t.image_id, t.score, t.round, t.uniform, t.gold, t.selected,
                        i.path, c.name)
                 .join(t, t.id == d.task_id).join(i, i.id == t.image_id)
                 .join(c, c.id == t.category_id).order_by(d.id)
                 .execution_options(yield_per=1000))
        with self._read() as session:
            for row in session.execute(query):
                decision = row[0]
                yield {"task_id": decision.task_id, "candidate_id": row.image_id,
                       "path": row.path, "category": row.name, "score": row.score,
                       "labeler": decision.labeler, "decision": decision.decision,
                       "seconds": decision.seconds, "model_version": decision.model_version,
                       "round": row.round,
                       "created_at": datetime.datetime.fromtimestamp(
                           decision.created_at, datetime.timezone.utc).isoformat(),
                       "uniform": row.uniform, "gold": row.gold, "selected": row.selected}
