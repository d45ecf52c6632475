"""Shared output of the analysis command lines."""

import json
import os
import tempfile


def emit_json(result, output=None):
    """Print `result` as JSON and, when `output` is set, write it there atomically."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        directory = os.path.dirname(os.path.abspath(output))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, output)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
