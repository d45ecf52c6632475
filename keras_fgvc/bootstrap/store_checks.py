"""Input checks of the Store: clear ValueErrors naming the bad value."""

import json
import math
import numbers

DECISIONS = ("accept", "reject", "unsure")
DECISION_KEYS = ("task_id", "labeler", "decision", "seconds")
DEFAULT_SETTINGS = {"config": "bootstrap_triplet_a_hn", "threshold": 0.5, "uniform_share": 0.1,
                    "gold_share": 0.0, "probe_share": 0.0, "overlap": 1, "lease_seconds": 600,
                    "seed": 0}


def check_int(value, what, low=None):
    """`value` as a 64-bit int (NumPy integers too); ValueError naming `what` otherwise."""
    if type(value) is not int:  # a plain int (the usual case) skips the slow ABC check
        if isinstance(value, bool) or type(value).__name__ == "bool_" or \
                not isinstance(value, numbers.Integral):
            raise ValueError(f"{what} must be an integer, got {value!r}")
        value = int(value)
    if not -2**63 <= value < 2**63:  # what both databases store
        raise ValueError(f"{what} is out of the 64-bit integer range, got {value}")
    if low is not None and value < low:
        raise ValueError(f"{what} must be >= {low}, got {value}")
    return value


def check_number(value, what, low=None, high=None):
    """`value` as a finite float in [low, high]; ValueError naming `what` otherwise."""
    if type(value) not in (float, int) and (  # plain numbers skip the slow ABC check
            isinstance(value, bool) or type(value).__name__ == "bool_" or
            not isinstance(value, numbers.Real)):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int past the float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    value = number
    if low is not None and value < low:
        raise ValueError(f"{what} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{what} must be <= {high}, got {value}")
    return value


def check_flag(value, what):
    """`value` as a bool (Python or NumPy booleans, 0 or 1)."""
    if value is True or value is False or type(value).__name__ == "bool_" or value in (0, 1):
        return bool(value)
    raise ValueError(f"{what} must be a boolean, got {value!r}")


def check_text(value, what, allow_empty=False):
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def validate_settings(settings):
    """The project settings with defaults filled in; ValueError names a bad one."""
    if not isinstance(settings, dict):
        raise ValueError(f"settings must be a dict, got {type(settings).__name__}")
    merged = dict(DEFAULT_SETTINGS, **settings)
    check_number(merged["threshold"], "threshold", 0, 1)
    check_number(merged["uniform_share"], "uniform_share", 0, 1)
    check_number(merged["gold_share"], "gold_share", 0, 1)
    check_number(merged["probe_share"], "probe_share", 0, 0.99)
    check_int(merged["overlap"], "overlap", 1)
    check_number(merged["lease_seconds"], "lease_seconds", 1e-3)
    check_int(merged["seed"], "seed")
    check_text(merged["config"], "config")
    if "rounds" in merged:
        check_int(merged["rounds"], "rounds", 1)
    try:
        json.dumps(merged)
    except (TypeError, ValueError) as e:
        raise ValueError(f"settings must be JSON-serialisable: {e}") from e
    return merged


def check_labeler(labeler):
    """A labeler's name: a non-empty string of at most 200 characters, stripped."""
    if not isinstance(labeler, str) or not labeler.strip():
        raise ValueError(f"labeler must be a non-empty name, got {labeler!r}")
    if len(labeler.strip()) > 200:
        raise ValueError("labeler names are at most 200 characters")
    return labeler.strip()


def check_decisions(decisions):
    """Checked decisions: a list of dict(task_id, labeler, decision, seconds).

    `seconds` (time taken) may be missing or null (not known); the other
    fields are required. A (task, labeler) pair given twice is an error.
    """
    if not isinstance(decisions, (list, tuple)):
        raise ValueError(f"decisions must be a list, got {type(decisions).__name__}")
    out, seen = [], set()
    for position, item in enumerate(decisions):
        where = f"decisions[{position}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object, got {item!r}")
        unknown = set(item) - set(DECISION_KEYS)
        if unknown:
            raise ValueError(f"{where} has unknown fields {sorted(unknown)}; "
                             f"expected {list(DECISION_KEYS)}")
        for key in ("task_id", "labeler", "decision"):
            if key not in item:
                raise ValueError(f"{where} has no {key!r}")
        if item["decision"] not in DECISIONS:
            raise ValueError(f"{where}: decision must be one of {list(DECISIONS)}, "
                             f"got {item['decision']!r}")
        seconds = item.get("seconds")
        if seconds is not None:
            seconds = check_number(seconds, f"{where}.seconds", 0)
        clean = {"task_id": check_int(item["task_id"], f"{where}.task_id"),
                 "labeler": check_labeler(item["labeler"]), "decision": item["decision"],
                 "seconds": seconds}
        key = (clean["task_id"], clean["labeler"])
        if key in seen:
            raise ValueError(f"{where}: task {key[0]} is decided twice by {key[1]!r} in one batch")
        seen.add(key)
        out.append(clean)
    return out
