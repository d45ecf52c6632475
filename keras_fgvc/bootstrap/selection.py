"""Which scored candidates become review tasks, and the labelled images shown beside them.

- Selected (Sec. 2.2.2): every candidate whose top confidence is above the
  threshold (0.5), a task for its argmax category: D_i.
- Uniform sample (beyond the paper): ``round(uniform_share * n)`` of the n
  scored candidates drawn uniformly at random, above and below the threshold,
  each a task for its argmax category. Their decisions estimate the precision
  and recall of the selection without bias (`Store.selection_quality`); a
  selected candidate drawn is one task, marked both.
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

import numpy as np

NEIGHBORS = 3


def choose_tasks(image_ids, category_ids, scores, truth, threshold=0.5, uniform_share=0.1,
                 gold_share=0.0, seed=0, round_index=1, category_names=None):
    """Task rows (dicts of `Store.open_tasks` without neighbours) for the scored candidates.

    Args:
        image_ids, category_ids, scores: the round's scores (argmax category, top confidence).
        truth: {image_id: known label} (gold candidates), possibly empty.
        category_names: {category_id: name}, to tell a gold item's right answer
            (accept when its truth is the name); needed when gold_share > 0.
        threshold, uniform_share, gold_share, seed, round_index: module docstring.

    Returns:
        list of dicts ``image_id, category_id, score, selected, uniform, gold``, by image id.
    """
    image_ids = np.asarray(image_ids, np.int64)
    category_ids = np.asarray(category_ids, np.int64)
    scores = np.asarray(scores, np.float64)
    n = len(image_ids)
    rng = np.random.default_rng([int(seed), int(round_index), 1716])
    selected = scores > threshold
    uniform = np.zeros(n, bool)
    uniform[rng.choice(n, size=min(n, int(round(uniform_share * n))), replace=False)] = True
    chosen = selected | uniform
    gold = np.zeros(n, bool)
    count = int(round(gold_share * chosen.sum()))
    if count:
        if category_names is None:
            raise ValueError("choose_tasks: gold_share > 0 needs category_names")
        known = np.flatnonzero(np.isin(image_ids, list(truth)))
        accept = np.array([truth[int(image_ids[i])] == category_names[int(category_ids[i])]
                           for i in known], bool)
        yes, no = rng.permutation(known[accept]), rng.permutation(known[~accept])
        half = min(len(yes), max(count - len(no), (count + 1) // 2))
        gold[yes[:half]] = True
        gold[no[:count - half]] = True
    keep = np.flatnonzero(chosen | gold)
    return [{"image_id": int(image_ids[i]), "category_id": int(category_ids[i]),
             "score": float(scores[i]), "selected": bool(selected[i]),
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
