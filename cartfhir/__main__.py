"""``python -m cartfhir`` and ``spark-submit .../cartfhir/__main__.py``: the CLI.

Guarded, so that importing this module (to find its path for spark-submit) runs nothing.
"""

from cartfhir.cli import main

if __name__ == "__main__":
    main()
