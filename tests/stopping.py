"""Stop a real ``cartfhir transform`` part-way, at a table of the build, with a signal.

The transform logs ``building <table>`` (JSON on stderr with ``--log-format json``)
before each table; the signal goes as soon as that line for ``table`` appears, so it
lands mid-transform at a known point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def signal_transform_at(config: Path, table: str, signum: int) -> tuple[int, str]:
    """Run 'cartfhir transform', send ``signum`` when it starts ``table``; return the exit
    code (negative: killed by that signal) and everything it wrote to stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cartfhir", "--log-format", "json",
                             "transform", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # ends when the process does
        seen.append(line.decode("utf-8", "replace"))
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("table") == table:
            proc.send_signal(signum)
            break
    seen.append(proc.stderr.read().decode("utf-8", "replace"))
    proc.wait(timeout=120)
    return proc.returncode, "".join(seen)
