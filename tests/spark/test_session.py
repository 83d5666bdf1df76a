"""Which settings a session gets: the fixed ones always, the small local defaults only
when cartfhir starts a local session itself (a cluster keeps its own)."""

from __future__ import annotations

import pytest

from cartfhir.spark import session

pytestmark = pytest.mark.spark


@pytest.mark.parametrize(("master", "launched", "applies"), [
    ("local[2]", False, True),
    ("local", False, True),
    ("local[*]", False, True),
    ("yarn", False, False),
    ("spark://head:7077", False, False),
    ("local[2]", True, False),  # spark-submit --master local[8]: the launcher's settings
])
def test_local_defaults_only_for_a_local_session_we_start(master: str, launched: bool,
                                                          applies: bool) -> None:
    assert session.local_defaults(master, launched) is applies


def test_a_launcher_is_seen_by_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyspark.sql import SparkSession  # pyspark is a test dependency (make test)

    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    assert not session.launched_outside()
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")  # what spark-submit's JVM sets
    assert session.launched_outside()


def test_the_fixed_settings_hold_in_the_test_session(spark) -> None:  # noqa: ANN001
    for key, value in session.FIXED_CONF.items():
        assert spark.conf.get(key) == value


def test_the_needed_settings_hold_unless_the_user_sets_them(spark) -> None:  # noqa: ANN001
    for key, value in session.NEEDED_CONF.items():
        assert spark.conf.get(key) == value
