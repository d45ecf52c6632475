"""Shared output of the analysis command lines: JSON results and PNG bar charts."""

import json

from keras_fgvc.files import atomic_write, write_text


def emit_json(result, output=None):
    """Print `result` as JSON and, when `output` is set, write it there atomically."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        write_text(output, text + "\n")


def save_bar_plots(path, panels, ylabel):
    """Write bar charts (one panel each) to a PNG at `path`, with matplotlib's Agg canvas.

    Args:
        path: the ``.png`` to write (its folder is created).
        panels: list of (title, bar labels, bar heights).
        ylabel: y-axis label of every panel.

    Uses `matplotlib.figure.Figure` with its own Agg canvas, so no global
    backend is switched and no window opens.
    """
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"--plot must name a .png file, got {path!r}.")
    if not panels:
        raise ValueError("Nothing to plot: panels is empty.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = max(4.0, 0.45 * max(len(p[1]) for p in panels) + 1.5)
    fig = Figure(figsize=(width, 3.2 * len(panels)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (title, labels, heights) in zip(axes, panels):
        positions = range(len(heights))
        ax.bar(positions, [float(h) for h in heights], color="tab:blue")
        ax.set_xticks(list(positions))
        ax.set_xticklabels([str(label) for label in labels], rotation=45, ha="right")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), suffix=".png")
    return path
