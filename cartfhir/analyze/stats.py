"""The CART1-versus-CART2 statistics, as pure functions over plain Python values.

The default tests are the ones that reproduce the paper's published p-values
(domain.md §1.3, §8): unpaired two-sided Fisher exact for proportions, Mann–Whitney U
(exact without ties) for continuous and ordinal endpoints; the paired tests are labelled
sensitivity analyses. No I/O, no printing; inputs may contain ``None``/NaN, which are
dropped and never counted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import numpy as np
from scipy import stats

# Exact Mann–Whitney is fast up to ~100 per group (ms) and slow beyond (seconds at 200);
# at that size the normal approximation is indistinguishable anyway.
MWU_EXACT_MAX_N = 100

# What the report calls each test this module runs (TestResult.name): the one mapping
# from a test's code name to its human name, next to the tests that make the names.
TEST_NAMES = {
    "fisher_exact": "Fisher exact test",
    "mcnemar_exact": "Exact McNemar test",
    "mann_whitney": "Mann–Whitney U test",  # not run: a group had no values
    "mann_whitney_exact": "Mann–Whitney U test (exact)",
    "mann_whitney_asymptotic": "Mann–Whitney U test (normal approximation)",
    "wilcoxon_signed_rank_approx": "Wilcoxon signed-rank test (normal approximation)",
    "wilcoxon_signed_rank_exact": "Wilcoxon signed-rank test (exact)",
}

PairedMethod = Literal["approx", "exact"]
KmCiMethod = Literal["log-log", "linear"]


@dataclass(frozen=True)
class TestResult:
    """One two-group comparison.

    ``n1``/``n2`` are the values actually used (after dropping missing ones); for the
    paired tests both are the number of complete pairs. ``p_value`` is ``None`` when the
    test is undefined, and ``note`` then says why.
    """

    __test__ = False  # not a pytest test class, despite the name

    name: str
    statistic: float | None
    p_value: float | None
    n1: int
    n2: int
    note: str = ""


@dataclass(frozen=True)
class Summary:
    """Median (IQR) and range of one group; all ``None`` when the group is empty."""

    n: int
    median: float | None
    q1: float | None
    q3: float | None
    min: float | None
    max: float | None
    method: str = "linear"  # numpy percentile method used for median, q1, q3


@dataclass(frozen=True)
class KmStep:
    """One row of the Kaplan–Meier table: survival just after ``time``.

    Rows exist at every distinct observed time, event or censoring; ``ci_low`` and
    ``ci_high`` are ``None`` where the pointwise interval is undefined (survival 1 or 0).
    """

    time: float
    at_risk: int
    events: int
    censored: int
    survival: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class KaplanMeier:
    """Product-limit estimate with pointwise CIs and the median time with its CI.

    ``median`` is ``None`` when survival never falls to 0.5 ("not reached"); a median CI
    bound is ``None`` when its band never reaches 0.5 (not reached / not estimable).
    """

    n: int
    n_events: int
    table: tuple[KmStep, ...]
    median: float | None
    median_ci_low: float | None
    median_ci_high: float | None
    ci_method: str
    confidence_level: float


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN (float, numpy) is the only value unequal to itself
    except TypeError:  # pandas.NA refuses bool(); it is missing too
        return True


def _clean(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if not _is_missing(v)]


def _flag(value: Any) -> bool:
    if value not in (0, 1):  # True/False and 0/1 (any numeric type) only
        raise ValueError(f"event flag must be True/False or 0/1, got {value!r}")
    return bool(value)


def count_events(flags: Iterable[Any]) -> tuple[int, int]:
    """Return (events, n) over the non-missing flags; ``None``/NaN are not in n."""
    known = [_flag(f) for f in flags if not _is_missing(f)]
    return sum(known), len(known)


def summarize(values: Iterable[Any], *, method: str = "linear") -> Summary:
    """Median, quartiles, min and max of the non-missing values.

    Quartiles use numpy's ``percentile`` with ``method="linear"`` by default (R type 7,
    Excel PERCENTILE.INC). SPSS's default (HAVERAGE, R type 6) is ``method="weibull"``;
    pass it to reproduce an SPSS IQR, which differs for small n.
    """
    xs = _clean(values)
    if not xs:
        return Summary(0, None, None, None, None, None, method)
    q1, median, q3 = (float(v) for v in np.percentile(xs, [25, 50, 75], method=method))
    return Summary(len(xs), median, q1, q3, min(xs), max(xs), method)


def proportion_test(cart1_events: int, cart1_n: int, cart2_events: int, cart2_n: int) -> TestResult:
    """Two-sided Fisher exact test on the 2×2 table, CART1 and CART2 as independent groups.

    This is the only test that reproduces the paper's MRD-negative CR p = .029 (9/9 vs
    4/9). ``statistic`` is the sample odds ratio (CART1 vs CART2; may be inf or 0).
    """
    for events, n in ((cart1_events, cart1_n), (cart2_events, cart2_n)):
        if not 0 <= events <= n:
            raise ValueError(f"need 0 <= events <= n, got events={events}, n={n}")
    if cart1_n == 0 or cart2_n == 0:
        return TestResult("fisher_exact", None, None, cart1_n, cart2_n, "a group is empty")
    table = [[cart1_events, cart1_n - cart1_events], [cart2_events, cart2_n - cart2_events]]
    res = stats.fisher_exact(table, alternative="two-sided")
    return TestResult("fisher_exact", float(res.statistic), float(res.pvalue), cart1_n, cart2_n)


def paired_proportion_test(pairs: Iterable[tuple[Any, Any]]) -> TestResult:
    """Exact McNemar test: two-sided binomial test (p = 1/2) on the discordant pairs.

    Pairs are (CART1, CART2) flags of the same patient; a pair with a missing side is
    dropped. ``statistic`` is b, the number of pairs with the event after CART1 only.
    """
    complete = [(_flag(a), _flag(b)) for a, b in pairs if not (_is_missing(a) or _is_missing(b))]
    n = len(complete)
    b = sum(1 for first, second in complete if first and not second)
    c = sum(1 for first, second in complete if second and not first)
    note = f"discordant pairs: b={b} (CART1 only), c={c} (CART2 only)"
    if n == 0:
        return TestResult("mcnemar_exact", None, None, 0, 0, "no complete pairs")
    # No discordant pair is no evidence of a difference; binomtest(0, 0) is undefined.
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return TestResult("mcnemar_exact", float(b), p, n, n, note)


def continuous_test(x: Iterable[Any], y: Iterable[Any]) -> TestResult:
    """Two-sided Mann–Whitney U test of CART1 values ``x`` against CART2 values ``y``.

    Exact when the pooled values have no ties and each group has at most
    ``MWU_EXACT_MAX_N`` values (the exact test gives the paper's IL-17A p = .011 for
    U = 12, n = 9 + 9); otherwise the normal approximation with tie and continuity
    correction (scipy's default; SPSS omits the continuity correction). ``statistic``
    is U of ``x`` (SPSS prints min(U, n1·n2 − U)).
    """
    xs, ys = _clean(x), _clean(y)
    n1, n2 = len(xs), len(ys)
    if n1 == 0 or n2 == 0:
        return TestResult("mann_whitney", None, None, n1, n2, "a group has no values")
    ties = len(set(xs + ys)) < n1 + n2
    if not ties and max(n1, n2) <= MWU_EXACT_MAX_N:
        method, note = "exact", ""
    else:
        method = "asymptotic"
        note = "ties present" if ties else f"a group has more than {MWU_EXACT_MAX_N} values"
    if len(set(xs + ys)) == 1:
        # Zero variance: the approximation's z is 0/0; scipy reports p = 1, which is the
        # honest answer (the data cannot distinguish the groups).
        note = "all values tied"
    res = stats.mannwhitneyu(xs, ys, alternative="two-sided", method=method)
    return TestResult(
        f"mann_whitney_{method}", float(res.statistic), float(res.pvalue), n1, n2, note
    )


def ordinal_test(x: Iterable[Any], y: Iterable[Any]) -> TestResult:
    """Mann–Whitney U for ordinal grades (e.g. CRS grade 0–4), as ``continuous_test``.

    Kept as its own name so callers say what they compare; with grades, ties are the
    rule, so the result is nearly always the asymptotic test.
    """
    return continuous_test(x, y)


def paired_continuous_test(
    pairs: Iterable[tuple[Any, Any]], *, method: PairedMethod = "approx"
) -> TestResult:
    """Wilcoxon signed-rank test on (CART1, CART2) pairs: the paired sensitivity analysis.

    The default, the normal approximation without continuity correction (SPSS's
    default), gives .011 for T = 1 of n = 9, matching the paper; the exact test cannot
    (its p jumps .0078 → .0117). Zero differences are dropped (Wilcoxon's method). When
    ``method="exact"`` but nonzero |differences| are tied, scipy's "exact" p is only
    conservative, so the approximation is used and the note says so. ``statistic`` is
    T = min(W+, W−).
    """
    if method not in ("approx", "exact"):
        raise ValueError(f'method must be "approx" or "exact", got {method!r}')
    complete = [(float(a), float(b)) for a, b in pairs if not (_is_missing(a) or _is_missing(b))]
    n = len(complete)
    diffs = [a - b for a, b in complete]
    nonzero = [d for d in diffs if d != 0]
    zeros = n - len(nonzero)
    notes = [f"{zeros} zero differences dropped"] if zeros else []
    if not nonzero:
        name = f"wilcoxon_signed_rank_{method}"
        return TestResult(name, None, None, n, n, "no nonzero differences")
    if method == "exact" and len({abs(d) for d in nonzero}) < len(nonzero):
        method = "approx"
        notes.append("ties among |differences|: exact replaced by normal approximation")
    res = stats.wilcoxon(
        nonzero,
        zero_method="wilcox",
        correction=False,
        alternative="two-sided",
        method="asymptotic" if method == "approx" else "exact",
    )
    return TestResult(
        f"wilcoxon_signed_rank_{method}",
        float(res.statistic),
        float(res.pvalue),
        n,
        n,
        "; ".join(notes),
    )


def test_name(name: str | None) -> str:
    """The human name of a test's code name (``TEST_NAMES``); ``–`` when no test ran."""
    if name is None or _is_missing(name):
        return "–"
    return TEST_NAMES.get(name, name)


test_name.__test__ = False  # a helper, not a pytest test


def format_p(p: float | None) -> str:
    """Journal style: 3 decimals, no leading zero, ``<.001`` below .001, ``–`` if none.

    Rounds half up on the shortest decimal form of ``p`` (0.0625 → ".063", as SPSS
    prints), not half-to-even on the binary value (which would give ".062"). Pass the
    computed p, not a pre-rounded one: CRES's p is 0.57647… → ".576", whereas a typed
    0.5765 would become ".577".
    """
    if p is None or math.isnan(p):
        return "–"
    if p < 0 or p > 1 + 1e-9:
        raise ValueError(f"p-value out of [0, 1]: {p!r}")
    if p < 0.001:
        return "<.001"
    rounded = Decimal(repr(float(min(p, 1.0)))).quantize(Decimal("0.001"), ROUND_HALF_UP)
    text = f"{rounded:.3f}"
    return text[1:] if text.startswith("0") else text


def small_cell(count: int, k: int) -> int | str:
    """Suppress small counts for output leaving the site: 1..k−1 become ``"<k"``.

    Zero stays 0 (an absent event discloses nobody); ``k`` comes from config
    (e.g. 5 or 11), never a literal here.
    """
    if count < 0 or k < 1:
        raise ValueError(f"need count >= 0 and k >= 1, got count={count}, k={k}")
    return f"<{k}" if 0 < count < k else count


def _first_time_at_or_below(times: np.ndarray, curve: np.ndarray, level: float) -> float | None:
    # NaN (undefined band) never counts as crossing, so a bound stays "not reached".
    hits = np.flatnonzero(curve <= level + 1e-12)  # tolerate 0.5 computed as 0.49999…
    return float(times[hits[0]]) if hits.size else None


def kaplan_meier(
    times: Sequence[Any],
    events: Sequence[Any],
    *,
    ci_method: KmCiMethod = "log-log",
    confidence_level: float = 0.95,
) -> KaplanMeier:
    """Kaplan–Meier survival via ``scipy.stats.ecdf`` on right-censored data.

    ``events[i]`` is true for an event at ``times[i]`` and false for censoring; a pair
    with a missing side is dropped. Pointwise CIs use Greenwood's variance on the
    log(−log S) scale by default (SAS's default; stays inside [0, 1]); ``"linear"`` is
    the plain Greenwood interval. The median is the first time with S(t) ≤ 0.5 (R
    instead averages two times when S sits exactly at 0.5); its CI is Brookmeyer–Crowley
    style, the times whose pointwise band contains 0.5, as R's ``survfit`` reads it: the
    lower bound is the first time the lower band is ≤ 0.5, the upper bound the first
    time the upper band is ≤ 0.5.
    """
    if len(times) != len(events):
        raise ValueError(f"times and events differ in length: {len(times)} vs {len(events)}")
    data = [
        (float(t), _flag(e))
        for t, e in zip(times, events, strict=True)
        if not (_is_missing(t) or _is_missing(e))
    ]
    if any(t < 0 for t, _ in data):
        raise ValueError("negative follow-up time: an event or censoring before time 0")
    t_all = np.array([t for t, _ in data], dtype=float)
    e_all = np.array([e for _, e in data], dtype=bool)
    n, n_events = len(data), int(e_all.sum())
    empty_km = KaplanMeier(n, 0, (), None, None, None, ci_method, confidence_level)
    if n == 0:
        return empty_km

    sf = stats.ecdf(stats.CensoredData(uncensored=t_all[e_all], right=t_all[~e_all])).sf
    grid, survival = sf.quantiles, sf.probabilities
    if n_events:
        with warnings.catch_warnings():
            # scipy warns where the band is undefined (S = 0); those become None below.
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = sf.confidence_interval(confidence_level, method=ci_method)
        low, high = ci.low.probabilities, ci.high.probabilities
    else:  # all censored: S = 1 throughout and no band exists
        low = high = np.full(grid.shape, np.nan)

    table = tuple(
        KmStep(
            time=float(t),
            at_risk=int(np.sum(t_all >= t)),
            events=int(np.sum((t_all == t) & e_all)),
            censored=int(np.sum((t_all == t) & ~e_all)),
            survival=float(s),
            ci_low=None if np.isnan(lo) else float(lo),
            ci_high=None if np.isnan(hi) else float(hi),
        )
        for t, s, lo, hi in zip(grid, survival, low, high, strict=True)
    )
    return KaplanMeier(
        n=n,
        n_events=n_events,
        table=table,
        median=_first_time_at_or_below(grid, survival, 0.5),
        median_ci_low=_first_time_at_or_below(grid, low, 0.5),
        median_ci_high=_first_time_at_or_below(grid, high, 0.5),
        ci_method=ci_method,
        confidence_level=confidence_level,
    )
