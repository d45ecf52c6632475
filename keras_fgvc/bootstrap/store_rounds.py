"""Rounds and candidate scores of the Store (mixed into Store).

A round is created by `start_round` (status 'training'), moves through
'scoring' and 'labelling' (`update_round`) and is closed by `ingest`. The
scores of a round are written one shard at a time: a shard's scores and its
`scored_shard` row are one transaction, so a killed scoring run resumes at the
first shard not marked scored.
"""

import json

from sqlalchemy import select

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap.store_checks import check_int, check_number

CHUNK = 5000


def _round_dict(row):
    return {"index": row.index, "status": row.status, "model_version": row.model_version,
            "model_path": row.model_path, "workdir": row.workdir, "lineage": row.lineage,
            "started_at": row.started_at, "closed_at": row.closed_at}


class RoundsMixin:
    """Rounds and scores."""

    def start_round(self, index, model_version=None, workdir=None):
        """Create round `index` (status 'training'); idempotent: returns the existing round."""
        index = check_int(index, "round", 1)

        def work(session):
            row = session.scalar(select(schema.Round).where(schema.Round.index == index))
            if row is None:
                row = schema.Round(index=index, status="training", model_version=model_version,
                                   workdir=workdir, started_at=self.clock())
                session.add(row)
                session.flush()
            return _round_dict(row)

        return self._write(work)

    _ROUND_FIELDS = ("status", "model_version", "model_path", "workdir", "lineage", "closed_at")

    def update_round(self, index, **fields):
        """Set fields of round `index`: status, model_version, model_path, workdir, lineage."""
        index = check_int(index, "round", 1)
        unknown = set(fields) - set(self._ROUND_FIELDS)
        if unknown:
            raise ValueError(f"unknown round fields {sorted(unknown)}; "
                             f"expected {self._ROUND_FIELDS}")
        if "status" in fields and fields["status"] not in schema.ROUND_STATUSES:
            raise ValueError(f"round status must be one of {schema.ROUND_STATUSES}, "
                             f"got {fields['status']!r}")
        if "lineage" in fields:
            try:
                json.dumps(fields["lineage"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"lineage must be JSON-serialisable: {e}") from e

        def work(session):
            row = session.scalar(select(schema.Round).where(schema.Round.index == index))
            if row is None:
                raise ValueError(f"there is no round {index}")
            for key, value in fields.items():
                setattr(row, key, value)
            return _round_dict(row)

        return self._write(work)

    def rounds(self):
        with self._read() as session:
            rows = session.scalars(select(schema.Round).order_by(schema.Round.index)).all()
            return [_round_dict(r) for r in rows]

    def round(self, index):
        index = check_int(index, "round")
        with self._read() as session:
            row = session.scalar(select(schema.Round).where(schema.Round.index == index))
            return None if row is None else _round_dict(row)

    def _round_row(self, session, index, open_only=False):
        index = check_int(index, "round", 1)
        row = session.scalar(select(schema.Round).where(schema.Round.index == index))
        if row is None:
            raise ValueError(f"there is no round {index}")
        if open_only and row.status == "closed":
            raise ValueError(f"round {index} is closed")
        return row

    # === Scores ===
    def scored_shards(self, round_index):
        round_index = check_int(round_index, "round", 1)
        with self._read() as session:
            return set(session.scalars(select(schema.ScoredShard.shard)
                                       .where(schema.ScoredShard.round == round_index)))

    def add_scores(self, round_index, shard, rows):
        """Store one shard's scores and mark it scored.

        rows: ``(image_id, category_id, score)``, or with the recall probe
        ``(image_id, category_id, score, probe_category_id, probe_q, probe_score)``
        (`selection.draw_probes`). One transaction; a shard already scored is left
        as it is (returns 0).
        """
        shard = check_int(shard, "shard", 0)
        round_index = check_int(round_index, "round", 1)
        categories = self._category_by_id()
        clean = []
        for row in rows:
            if not isinstance(row, (tuple, list)) or len(row) not in (3, 6):
                raise ValueError("a score row is (image_id, category_id, score[, "
                                 f"probe_category_id, probe_q, probe_score]), got {row!r}")
            image_id = check_int(row[0], "image_id")
            ids = [check_int(row[1], f"category_id of image {image_id}")]
            if len(row) == 6:
                ids.append(check_int(row[3], f"probe_category_id of image {image_id}"))
            for category_id in ids:
                if category_id not in categories:
                    raise ValueError(f"unknown category_id {category_id}")
            probe = {"probe_category_id": None, "probe_q": None, "probe_score": None}
            if len(row) == 6:
                probe = {"probe_category_id": ids[1],
                         "probe_q": check_number(row[4], f"probe_q of image {image_id}", 0, 1),
                         "probe_score": check_number(row[5], f"probe_score of image {image_id}")}
                if probe["probe_q"] <= 0:
                    raise ValueError(f"probe_q of image {image_id} must be > 0")
            clean.append({"round": round_index, "shard": shard, "image_id": image_id,
                          "category_id": ids[0],
                          "score": check_number(row[2], f"score of image {image_id}"), **probe})

        def work(session):
            self._round_row(session, round_index, open_only=True)
            if session.get(schema.ScoredShard, (round_index, shard)) is not None:
                return 0
            for start in range(0, len(clean), CHUNK):
                chunk = clean[start:start + CHUNK]
                ids = {row["image_id"] for row in chunk}
                missing = ids - set(session.scalars(select(schema.Image.id)
                                                    .where(schema.Image.id.in_(ids))))
                if missing:
                    raise ValueError(f"unknown image ids {sorted(missing)[:10]}")
                session.execute(schema.Score.__table__.insert(), chunk)
            session.add(schema.ScoredShard(round=round_index, shard=shard))
            return len(clean)

        return self._write(work)

    def scores(self, round_index, probes=False):
        """(image_ids, category_ids, scores): three lists of round `round_index`, by image id;
        with `probes`, three more: probe_category_ids, probe_qs, probe_scores (None for a
        round scored before schema version 2)."""
        round_index = check_int(round_index, "round", 1)
        s = schema.Score
        columns = [s.image_id, s.category_id, s.score]
        if probes:
            columns += [s.probe_category_id, s.probe_q, s.probe_score]
        with self._read() as session:
            rows = session.execute(select(*columns).where(s.round == round_index)
                                   .order_by(s.image_id)).all()
        return tuple([r[k] for r in rows] for k in range(len(columns)))
