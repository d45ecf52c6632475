"""The model server serves SavedModels: it loads none of keras_fgvc's Keras code."""

import subprocess
import sys


def test_server_imports_no_keras_code():
    probe = (
        "import sys; sys.argv = ['server'];"
        "import keras_fgvc.serving.server, keras_fgvc.serving.rest;"
        "print(sorted(m for m in sys.modules if m.startswith('keras_fgvc.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    loaded = eval(out.strip().splitlines()[-1])  # noqa: S307 - our own repr of a list of str
    assert "keras_fgvc.export.versions" in loaded  # the probe did import the server
    heavy = [m for m in loaded if m.split(".")[1] in ("models", "layers", "losses", "training",
                                                     "data")
             or m == "keras_fgvc.export.saved_model"]
    assert heavy == []
