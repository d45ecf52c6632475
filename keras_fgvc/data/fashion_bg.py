"""Fashion-BG: a few rare Fashion-MNIST categories in a sea of background.

Our embedded stand-in for iNat-BG (background-splitting appendix A): the
rare categories (default Dress, Shirt, Bag) are labels 1..N, the other seven
categories are background (label 0). The training split holds every
background image of its pool and only as many positives as the requested
background fraction allows (e.g. 98% background: ~190 positives per rare
class; 99.8%: ~19).

Fashion-MNIST's 60,000 training images are cut into three disjoint parts
(seeded): the validation split (``val_size`` images, natural class
distribution), the teacher's source split (``teacher_size`` images of the
non-rare classes only) and the task's training pool. The test split is t10k.

The teacher (background splitting) is a classifier over the non-rare classes
(or the subset `teacher_classes` of them; background-splitting appendix D
keeps the S2 classes away from the S1 teacher) trained on the source split's
images of those classes, so it has never seen a rare category, as a
model pretrained on ImageNet has never seen the rare iNat species. This
module returns those images and their teacher labels
(``task.metadata["teacher_source"]``); `keras_fgvc.training.teacher` trains
the teacher on them and attaches its (cached) pseudo-labels to the splits.
"""

import hashlib

import numpy as np

from keras_fgvc.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from keras_fgvc.data.task import Split, Task

DEFAULT_RARE_CLASSES = (3, 6, 8)  # Dress, Shirt, Bag
BACKGROUND_FRACTIONS = (0.9, 0.98, 0.998)


def _positives_for(num_background, fraction, num_rare):
    """Positives per rare class so that background is `fraction` of the split."""
    return max(1, int(round(num_background * (1.0 - fraction) / (fraction * num_rare))))


def _eval_subset(idx, is_rare, fraction, rng):
    """Drops positives from `idx` so that background makes up `fraction` (None: keep all)."""
    if fraction is None:
        return idx
    bg, fg = idx[~is_rare], idx[is_rare]
    k = max(1, int(round(len(bg) * (1.0 - fraction) / fraction)))
    if k > len(fg):
        raise ValueError(f"eval_background_fraction={fraction} needs {k} positives, only "
                         f"{len(fg)} exist.")
    return np.sort(np.concatenate([bg, rng.choice(fg, k, replace=False)]))


def make_fashion_bg(rare_classes=DEFAULT_RARE_CLASSES, background_fraction=0.98,
                    num_background=None, val_size=5000, teacher_size=10000,
                    eval_background_fraction=None, seed=0, teacher=True, data_dir=None,
                    verbose=1, teacher_classes=None):
    """Builds the Fashion-BG task and its teacher's source split (no teacher is trained here).

    Args:
        rare_classes: Fashion-MNIST class ids (0..9) that become labels 1..N.
        background_fraction: share of the training split that is background,
            in (0, 1) (~0.9, ~0.98 and >= 0.998 are used by the study).
        num_background: background training images; default: all of the pool
            (about 28,500 with the default sizes).
        val_size: validation images carved from the training images
            (natural class distribution).
        teacher_size: images of the non-rare classes reserved to train the
            teacher (never in the task's splits).
        eval_background_fraction: when set, positives are dropped from val
            and test so that background makes up this share; default: all of
            t10k and the natural val distribution.
        seed: seeds every split and the teacher.
        teacher: the task gets a teacher: the source split must hold images
            of `teacher_classes`, returned in ``metadata["teacher_source"]``
            (`keras_fgvc.training.teacher.attach_fashion_bg_teacher` trains the
            teacher on them and labels the splits).
        teacher_classes: Fashion-MNIST class ids (non-rare, distinct) the
            teacher is trained on, in teacher-label order ascending; default
            all non-rare classes. The source split is carved as before (the
            task's splits do not change); the teacher trains only on its
            images of these classes.
        data_dir: Fashion-MNIST folder (default: search, see `load_fashion_mnist`).
        verbose: 1 prints the task summary.

    Returns:
        `Task` named ``fashion_bg``: images uint8 [n, 28, 28, 1], class names
        ``["background", <rare names>]``, ``teacher_class_names`` = the
        teacher classes' names (default: the seven non-rare class names);
        no teacher labels. ``metadata`` holds ``rare_classes``,
        ``teacher_classes``, ``source_indices`` (Fashion-MNIST indices of each
        split, of the source split ``teacher`` and of its teacher-class part
        ``teacher_train``) and, with `teacher`, ``teacher_source``: a dict of
        ``images`` (uint8 [m, 28, 28, 1]) and ``labels`` (int64 [m], index
        into ``teacher_class_names``) to train the teacher on, its ``seed``,
        and ``key``, the JSON-safe facts that identify those images (settings
        and a digest of the Fashion-MNIST files) for caches of what is
        computed from them.

    Raises:
        ValueError: a rare class outside 0..9 or repeated, no background
            class left, a teacher class that is rare, repeated or outside
            0..9, a fraction outside (0, 1), or too few images.

    Example:
        >>> task = make_fashion_bg(background_fraction=0.98, teacher=False)  # doctest: +SKIP
        >>> task.summary()  # doctest: +SKIP
        'fashion_bg: 4 classes (train=29015, val=5000, test=10000), N=3 rare, background 98.00%...'
    """
    rare = [int(c) for c in rare_classes]
    if not rare or len(set(rare)) != len(rare) or any(not 0 <= c < 10 for c in rare):
        raise ValueError(f"rare_classes must be distinct Fashion-MNIST classes in 0..9, "
                         f"got {tuple(rare_classes)}.")
    if len(rare) == 10:
        raise ValueError("rare_classes leaves no background class.")
    if not 0.0 < background_fraction < 1.0:
        raise ValueError(f"background_fraction must be in (0, 1), got {background_fraction}.")
    if eval_background_fraction is not None and not 0.0 < eval_background_fraction < 1.0:
        raise ValueError(f"eval_background_fraction must be in (0, 1), "
                         f"got {eval_background_fraction}.")
    others = _teacher_classes(teacher_classes, rare)
    (x, y), (xt, yt) = load_fashion_mnist(data_dir)
    to_label = np.zeros(10, np.int64)
    to_label[rare] = np.arange(1, len(rare) + 1)
    to_teacher = np.full(10, -1, np.int64)
    to_teacher[others] = np.arange(len(others))

    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    is_rare = np.isin(y, rare)
    val_idx = np.sort(perm[:val_size])
    rest = perm[val_size:]
    available = int(np.sum(~is_rare[rest]))
    if not 0 <= teacher_size <= available or (teacher and teacher_size < 1):
        raise ValueError(f"teacher_size={teacher_size} must be in [1, {available}] (the "
                         f"non-rare images left after val_size={val_size}).")
    teacher_idx = rest[~is_rare[rest]][:teacher_size]
    teacher_train_idx = teacher_idx[np.isin(y[teacher_idx], others)]
    if teacher and len(teacher_train_idx) == 0:
        raise ValueError(f"teacher_size={teacher_size} leaves no image of teacher_classes "
                         f"{others} to train the teacher on.")
    pool = rest[~np.isin(rest, teacher_idx)]
    bg_pool = pool[~is_rare[pool]]
    nb = len(bg_pool) if num_background is None else int(num_background)
    if not 1 <= nb <= len(bg_pool):
        raise ValueError(f"num_background={nb} must be in [1, {len(bg_pool)}] (the pool).")
    per_class = _positives_for(nb, background_fraction, len(rare))
    train_parts = [bg_pool[:nb]]
    for c in rare:
        members = pool[y[pool] == c]
        if len(members) < per_class:
            raise ValueError(
                f"background_fraction={background_fraction} with {nb} background images needs "
                f"{per_class} images of class {c} ({CLASS_NAMES[c]}), only {len(members)} left."
            )
        train_parts.append(members[:per_class])
    train_idx = np.sort(np.concatenate(train_parts))
    val_idx = _eval_subset(val_idx, is_rare[val_idx], eval_background_fraction, rng)
    test_idx = _eval_subset(np.arange(len(yt)), np.isin(yt, rare), eval_background_fraction, rng)

    images = lambda a, idx: a[idx][..., None]
    splits = {
        "train": Split(labels=to_label[y[train_idx]], images=images(x, train_idx)),
        "val": Split(labels=to_label[y[val_idx]], images=images(x, val_idx)),
        "test": Split(labels=to_label[yt[test_idx]], images=images(xt, test_idx)),
    }
    metadata = {"rare_classes": rare, "teacher_classes": others,
                "source_indices": {"train": train_idx, "val": val_idx, "test": test_idx,
                                   "teacher": teacher_idx, "teacher_train": teacher_train_idx}}
    if teacher:
        # The key's fields and values are those the teacher cache has always hashed (with the
        # teacher's own: version, epochs, builder, splits), so cache entries stay valid.
        key = dict(rare=rare, fraction=background_fraction, nb=nb, val_size=val_size,
                   teacher_size=teacher_size, eval_fraction=eval_background_fraction, seed=seed,
                   teacher_classes=others, data=_data_digest(x, y, xt, yt))
        metadata["teacher_source"] = {"images": images(x, teacher_train_idx),
                                      "labels": to_teacher[y[teacher_train_idx]],
                                      "seed": seed, "key": key}
    task = Task(name="fashion_bg", class_names=["background"] + [CLASS_NAMES[c] for c in rare],
                has_background=True, teacher_class_names=[CLASS_NAMES[c] for c in others],
                metadata=metadata, **splits)
    if verbose:
        print(task.summary())
    return task


def _teacher_classes(teacher_classes, rare):
    """The teacher's Fashion-MNIST classes, sorted: default all non-rare; checked."""
    others = [c for c in range(10) if c not in rare]
    if teacher_classes is None:
        return others
    try:
        chosen = [int(c) for c in teacher_classes]
    except (TypeError, ValueError):
        raise ValueError(f"teacher_classes must be Fashion-MNIST class ids, "
                         f"got {teacher_classes!r}.") from None
    if not chosen or len(set(chosen)) != len(chosen) or any(not 0 <= c < 10 for c in chosen):
        raise ValueError(f"teacher_classes must be distinct Fashion-MNIST classes in 0..9, "
                         f"got {tuple(teacher_classes)}.")
    overlap = sorted(set(chosen) & set(rare))
    if overlap:
        raise ValueError(f"teacher_classes {tuple(teacher_classes)} include rare class(es) "
                         f"{overlap}; the teacher must never see a rare category.")
    return sorted(chosen)


def _data_digest(*arrays):
    """A hash of the images and labels (a different data set never hits the cache)."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(str(a.shape).encode())
        digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()[:16]

