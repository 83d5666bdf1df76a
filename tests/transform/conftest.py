"""To go: the builders moved to tests/testbed.py; only tests/expectations and
tests/catalog/test_tables.py still import them from here (another engineer's files)."""

from tests.testbed import SECRET, config_dict, make_config, write_config

__all__ = ["SECRET", "config_dict", "make_config", "write_config"]
