"""Which scored candidates become review tasks, and the labelled images shown beside them.

- Selected (Sec. 2.2.2): every candidate whose top confidence is above the
  threshold (0.5), a task for its argmax category: D_i.
- Uniform sample (beyond the paper): ``round(uniform_share * n)`` of the n
  scored candidates drawn uniformly at random, above and below the threshold.
  Each asks about its *probe* category, drawn at scoring time from
  `probe_distribution`: the argmax with chance 1 - probe_share, else another
  category, mostly the ones the model ranks next. Their decisions estimate
  the precision and recall of the selection without bias
  (`Store.selection_quality`, `stats.ratio_estimate`): asking only the argmax
  cannot see an image of category c that the model places elsewhere, so its
  recall would be an upper bound. A selected candidate drawn is one task,
  marked both; when its probe is not its argmax, the selection's question
  about it is not asked (it joins neither S_i nor H_i).
- Gold items: ``round(gold_share * tasks)`` candidates whose label is known
  (``init --truth``), to measure each labeler's accuracy: half whose right
  answer is accept (the truth is the argmax category) and half reject, as far
  as the known ones allow, drawn among all scored candidates (a task already
  chosen is marked gold; others become extra tasks). Drawn from the
  candidates below the threshold alone, nearly every right answer would be
  reject, and a labeler who rejects everything would score ~100%.

All draws are seeded by the project's seed and the round. Evidence: every
task shows the 3 labelled images of its category (S_{i-1}) nearest to the
candidate in the model's embedding (`nearest_labelled`).
"""

import hashlib
import struct

import numpy as np

NEIGHBORS = 3
PROBE_FLOOR = 0.5  # share of a probe's non-argmax chance spread evenly over the categories


def probe_distribution(probabilities, probe_share, top=None):
    """q [n, N]: the chance of each category being a candidate's probe question.

    q(argmax) = 1 - probe_share; the other categories share probe_share, a
    (1 - PROBE_FLOOR) part in proportion to the model's probabilities and a
    PROBE_FLOOR part evenly, so every category has q > 0 whenever
    probe_share > 0 (what keeps the recall estimate unbiased). One category:
    q = 1. `top`: the argmax per row as the caller computed it (scoring's
    ``tf.argmax``, so a tie is broken the same way); default ``argmax(p)``.
    """
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or not p.shape[1]:
        raise ValueError(f"probabilities must be [n, N] with N >= 1, got shape {p.shape}")
    n, count = p.shape
    rows = np.arange(n)
    top = p.argmax(axis=1) if top is None else np.asarray(top, np.int64)
    if count == 1:
        return np.ones_like(p)
    other = np.clip(p, 0, None)
    other[rows, top] = 0.0
    total = other.sum(axis=1, keepdims=True)
    shape = np.where(total > 0, other / np.where(total > 0, total, 1.0), 1.0 / (count - 1))
    q = probe_share * ((1 - PROBE_FLOOR) * shape + PROBE_FLOOR / (count - 1))
    q[rows, top] = 1.0 - probe_share
    return q


def probe_units(seed, round_index, image_ids):
    """A uniform [0, 1) number per image, fixed by (seed, round, image): the probe draw."""
    out = np.empty(len(image_ids))
    for i, image_id in enumerate(image_ids):
        digest = hashlib.blake2b(f"probe:{seed}:{round_index}:{int(image_id)}".encode(),
                                 digest_size=8).digest()
        out[i] = struct.unpack("<Q", digest)[0] / 2.0**64
    return out


def draw_probes(probabilities, probe_share, units, top=None):
    """(probe column [n], its chance q [n], the model's probability of it [n]).

    Inverse-CDF draws from `probe_distribution` (`top`: see there) with `units`
    (`probe_units`).
    """
    p = np.asarray(probabilities, np.float64)
    q = probe_distribution(p, probe_share, top)
    cdf = np.cumsum(q, axis=1)
    units = np.asarray(units, np.float64)[:, None] * cdf[:, -1:]
    # The first column whose cumulative chance passes the unit has q > 0; rounding at
    # the very end falls back to the last column with q > 0.
    rows, last = np.arange(len(q)), q.shape[1] - 1 - np.argmax(q[:, ::-1] > 0, axis=1)
    column = np.minimum((cdf <= units).sum(axis=1), last)
    return column, q[rows, column], p[rows, column]


def choose_tasks(image_ids, category_ids, scores, truth, threshold=0.5, uniform_share=0.1,
                 gold_share=0.0, seed=0, round_index=1, category_names=None, probes=None):
    """Task rows (dicts of `Store.open_tasks` without neighbours) for the scored candidates.

    Args:
        image_ids, category_ids, scores: the round's scores (argmax category, top confidence).
        truth: {image_id: known label} (gold candidates), possibly empty.
        category_names: {category_id: name}, to tell a gold item's right answer
            (accept when its truth is the name of the category it asks); needed when
            gold_share > 0.
        probes: optional ``(probe_category_ids, probe_scores)`` per candidate (None
            entries: no probe, the argmax is asked): the question and score of a
            uniform-sample task (module docstring).
        threshold, uniform_share, gold_share, seed, round_index: module docstring.

    Returns:
        list of dicts ``image_id, category_id, score, selected, uniform, gold``, by image id;
        ``category_id`` and ``score`` are those of the category the task asks about.
    """
    image_ids = np.asarray(image_ids, np.int64)
    category_ids = np.asarray(category_ids, np.int64)
    scores = np.asarray(scores, np.float64)
    n = len(image_ids)
    rng = np.random.default_rng([int(seed), int(round_index), 1716])
    selected = scores > threshold
    uniform = np.zeros(n, bool)
    uniform[rng.choice(n, size=min(n, int(round(uniform_share * n))), replace=False)] = True
    asked, asked_score = category_ids.copy(), scores.copy()
    if probes is not None:
        probe_ids, probe_scores = probes
        for i in np.flatnonzero(uniform):
            if probe_ids[i] is not None:
                asked[i], asked_score[i] = probe_ids[i], probe_scores[i]
    chosen = selected | uniform
    gold = np.zeros(n, bool)
    count = int(round(gold_share * chosen.sum()))
    if count:
        if category_names is None:
            raise ValueError("choose_tasks: gold_share > 0 needs category_names")
        known = np.flatnonzero(np.isin(image_ids, list(truth)))
        accept = np.array([truth[int(image_ids[i])] == category_names[int(asked[i])]
                           for i in known], bool)
        yes, no = rng.permutation(known[accept]), rng.permutation(known[~accept])
        half = min(len(yes), max(count - len(no), (count + 1) // 2))
        gold[yes[:half]] = True
        gold[no[:count - half]] = True
    keep = np.flatnonzero(chosen | gold)
    return [{"image_id": int(image_ids[i]), "category_id": int(asked[i]),
             "score": float(asked_score[i]), "selected": bool(selected[i]),
             "uniform": bool(uniform[i]), "gold": bool(gold[i])} for i in keep]


def nearest_labelled(task_embeddings, labelled, k=NEIGHBORS):
    """For each task, the ids of the `k` labelled images of its category nearest to it.

    Args:
        task_embeddings: {image_id: (category_id, embedding)} of the tasks.
        labelled: {category_id: (image_ids [m], embeddings [m, D])} of S_{i-1}.
        k: neighbours per task.

    Returns:
        {image_id: [labelled image ids, nearest first]} (fewer when S has fewer).
    """
    out = {}
    for image_id, (category_id, vector) in task_embeddings.items():
        ids, vectors = labelled.get(category_id, ([], np.zeros((0, len(vector)))))
        if not len(ids):
            out[image_id] = []
            continue
        distances = ((np.asarray(vectors) - np.asarray(vector)[None]) ** 2).sum(-1)
        order = np.argsort(distances, kind="stable")[:k]
        out[image_id] = [int(ids[j]) for j in order]
    return out
