"""What machine a benchmark ran on, for its JSON (timings differ between hosts)."""

import os
import platform


def cpu_model():
    """The CPU's model name from /proc/cpuinfo ('' where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info(**extra):
    """Platform, CPU count and model, Python version, and `extra` fields."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
            "python": platform.python_version(), **extra}
