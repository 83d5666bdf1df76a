"""``cartfhir/__main__.py`` runs the CLI as a script and nothing when imported: the
spark-submit recipe imports it to find its path."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_main_module_runs_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", "import cartfhir.__main__ as m; "
                           "print(m.__file__)"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("__main__.py") and "Usage" not in done.stdout


def test_running_it_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "cartfhir", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "Usage" in done.stdout
