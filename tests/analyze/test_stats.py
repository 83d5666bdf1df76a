"""The statistics against published p-values and against first-principles computations.

Every reference value here is either quoted from domain.md §1.3/§8 or recomputed in the
test from its definition (hypergeometric and binomial sums with ``math.comb``, full
enumeration of rank assignments, the product-limit formula), never taken from scipy.
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest

from cartfhir.analyze import stats as st

Z975 = NormalDist().inv_cdf(0.975)


# ---------- references computed from first principles ----------


def fisher_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Sum of hypergeometric probabilities of tables no more likely than the observed."""
    row1, col1, total = a + b, a + c, a + b + c + d

    def prob(x: int) -> float:
        return math.comb(col1, x) * math.comb(total - col1, row1 - x) / math.comb(total, row1)

    observed = prob(a)
    support = range(max(0, row1 + col1 - total), min(row1, col1) + 1)
    return min(1.0, sum(prob(x) for x in support if prob(x) <= observed * (1 + 1e-7)))


def mcnemar_exact(b: int, c: int) -> float:
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mann_whitney_exact(x: list[float], y: list[float]) -> float:
    """P(|U − mean| ≥ |u − mean|) over every equally likely split of the pooled ranks."""
    pooled = sorted(x + y)
    rank = {v: i + 1 for i, v in enumerate(pooled)}  # no ties in the inputs used here
    n1, n2 = len(x), len(y)

    def u_of(ranks: tuple[int, ...]) -> float:
        return sum(ranks) - n1 * (n1 + 1) / 2

    u_obs = u_of(tuple(rank[v] for v in x))
    centre = n1 * n2 / 2
    splits = list(itertools.combinations(range(1, n1 + n2 + 1), n1))
    extreme = sum(1 for s in splits if abs(u_of(s) - centre) >= abs(u_obs - centre) - 1e-9)
    return extreme / len(splits)


def signed_rank_exact(diffs: list[float]) -> float:
    """Two-sided exact p over all 2^n sign flips (no zeros, no ties in |d|)."""
    ranked = sorted(abs(d) for d in diffs)
    ranks = {v: i + 1 for i, v in enumerate(ranked)}
    w_plus = sum(ranks[abs(d)] for d in diffs if d > 0)
    n = len(diffs)
    centre = n * (n + 1) / 4
    sums = [
        sum(r for r, s in zip(range(1, n + 1), signs, strict=True) if s)
        for signs in itertools.product((0, 1), repeat=n)
    ]
    return sum(1 for w in sums if abs(w - centre) >= abs(w_plus - centre) - 1e-9) / 2**n


def signed_rank_normal(diffs: list[float]) -> float:
    """Normal approximation, tie-corrected variance, no continuity correction."""
    nz = [d for d in diffs if d != 0]
    n = len(nz)
    absvals = sorted(abs(d) for d in nz)
    avg_rank = {}
    for v in set(absvals):
        positions = [i + 1 for i, a in enumerate(absvals) if a == v]
        avg_rank[v] = sum(positions) / len(positions)
    w_plus = sum(avg_rank[abs(d)] for d in nz if d > 0)
    ties = sum(t**3 - t for t in (absvals.count(v) for v in set(absvals)))
    var = n * (n + 1) * (2 * n + 1) / 24 - ties / 48
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


def percentile_linear(xs: list[float], q: float) -> float:
    s = sorted(xs)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


# ---------- proportions ----------


def test_fisher_reproduces_published_mrd_negative_cr_p() -> None:
    res = st.proportion_test(9, 9, 4, 9)
    assert res.name == "fisher_exact"
    assert res.p_value == pytest.approx(0.0294, abs=5e-5)
    assert res.p_value == pytest.approx(fisher_two_sided(9, 0, 4, 5), rel=1e-12)
    assert st.format_p(res.p_value) == ".029"
    assert (res.n1, res.n2) == (9, 9)
    assert res.statistic == math.inf


def test_fisher_reproduces_cres_p() -> None:
    res = st.proportion_test(3, 9, 1, 9)
    assert res.p_value == pytest.approx(0.5765, abs=5e-5)
    assert res.p_value == pytest.approx(fisher_two_sided(3, 6, 1, 8), rel=1e-12)
    assert st.format_p(res.p_value) == ".576"
    assert res.statistic == pytest.approx((3 * 8) / (6 * 1))


@pytest.mark.parametrize(
    "e1,n1,e2,n2",
    [(0, 9, 0, 9), (5, 9, 5, 9), (1, 3, 7, 8), (10, 20, 2, 15), (0, 1, 1, 1), (7, 12, 0, 5)],
)
def test_fisher_matches_hypergeometric_sum(e1: int, n1: int, e2: int, n2: int) -> None:
    res = st.proportion_test(e1, n1, e2, n2)
    assert res.p_value == pytest.approx(fisher_two_sided(e1, n1 - e1, e2, n2 - e2), rel=1e-9)


def test_fisher_empty_group_has_no_p() -> None:
    res = st.proportion_test(0, 0, 3, 9)
    assert res.p_value is None and res.statistic is None
    assert "empty" in res.note


@pytest.mark.parametrize("args", [(10, 9, 1, 9), (-1, 9, 1, 9), (1, 9, 3, 2)])
def test_fisher_rejects_impossible_counts(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        st.proportion_test(*args)


def test_mcnemar_published_discordance() -> None:
    # All 9 MRD-negative after CART1, 4 after CART2: discordant 5 vs 0.
    pairs = [(True, True)] * 4 + [(True, False)] * 5
    res = st.paired_proportion_test(pairs)
    assert res.name == "mcnemar_exact"
    assert res.p_value == pytest.approx(0.0625, abs=1e-12)
    assert res.p_value == pytest.approx(mcnemar_exact(5, 0))
    assert res.statistic == 5 and (res.n1, res.n2) == (9, 9)
    assert "b=5" in res.note and "c=0" in res.note


@pytest.mark.parametrize("b,c", [(3, 1), (1, 3), (7, 2), (4, 4), (0, 6), (12, 5)])
def test_mcnemar_matches_binomial_sum(b: int, c: int) -> None:
    pairs = [(True, False)] * b + [(False, True)] * c + [(False, False)] * 3
    assert st.paired_proportion_test(pairs).p_value == pytest.approx(mcnemar_exact(b, c))


def test_mcnemar_without_discordant_pairs_is_one_and_drops_missing() -> None:
    pairs = [(True, True), (False, False), (None, True), (1, 1), (0, float("nan"))]
    res = st.paired_proportion_test(pairs)
    assert res.p_value == 1.0
    assert res.n1 == 3


def test_mcnemar_no_complete_pairs() -> None:
    res = st.paired_proportion_test([(None, True)])
    assert res.p_value is None and res.n1 == 0


def test_count_events_ignores_missing_and_rejects_non_flags() -> None:
    assert st.count_events([True, False, None, 1, 0, float("nan"), True]) == (3, 5)
    assert st.count_events([]) == (0, 0)
    with pytest.raises(ValueError):
        st.count_events([True, 2])
    with pytest.raises(ValueError):
        st.count_events(["yes"])


# ---------- Mann–Whitney ----------


def test_mann_whitney_reproduces_published_il17a_p() -> None:
    # Ranks 1..18 with no ties; CART1 holds 1..7, 14, 15, so U(CART1) = 6 + 6 = 12.
    x = [1, 2, 3, 4, 5, 6, 7, 14, 15]
    y = [8, 9, 10, 11, 12, 13, 16, 17, 18]
    res = st.continuous_test(x, y)
    assert res.name == "mann_whitney_exact"
    assert res.statistic == 12
    assert res.p_value == pytest.approx(0.0106, abs=5e-5)
    assert res.p_value == pytest.approx(mann_whitney_exact(x, y), rel=1e-9)
    assert st.format_p(res.p_value) == ".011"


@pytest.mark.parametrize(
    "x,y",
    [
        ([1.5, 3.2, 4.0, 9.9], [2.1, 5.5, 6.0, 7.7]),
        ([10, 20, 30, 40], [1, 2, 3, 4]),
        ([0.3, 8.1, 2.2, 6.4, 5.0], [4.4, 1.1, 9.0, 7.3]),
        ([1.0], [2.0, 3.0]),
    ],
)
def test_mann_whitney_exact_matches_enumeration(x: list[float], y: list[float]) -> None:
    res = st.continuous_test(x, y)
    assert res.name == "mann_whitney_exact"
    assert res.p_value == pytest.approx(mann_whitney_exact(x, y), rel=1e-9)


def test_mann_whitney_ties_use_asymptotic_with_tie_correction() -> None:
    x, y = [1, 2, 2, 3, 4], [2, 3, 5, 5, 6]
    res = st.continuous_test(x, y)
    assert res.name == "mann_whitney_asymptotic"
    assert "ties" in res.note
    # By hand: U, tie-corrected variance, continuity correction 0.5.
    pooled = sorted(x + y)
    avg = {v: sum(i + 1 for i, p in enumerate(pooled) if p == v) / pooled.count(v) for v in pooled}
    n1, n2, n = len(x), len(y), len(x) + len(y)
    u = sum(avg[v] for v in x) - n1 * (n1 + 1) / 2
    ties = sum(t**3 - t for t in (pooled.count(v) for v in set(pooled)))
    sd = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (abs(u - n1 * n2 / 2) - 0.5) / sd
    assert res.statistic == u
    assert res.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)


def test_mann_whitney_drops_none_and_nan() -> None:
    res = st.continuous_test([1.0, None, float("nan"), 2.0], [3.0, 4.0, None])
    assert (res.n1, res.n2) == (2, 2)
    assert res.p_value == pytest.approx(mann_whitney_exact([1.0, 2.0], [3.0, 4.0]))


def test_mann_whitney_empty_group_has_no_p() -> None:
    res = st.continuous_test([None, float("nan")], [1.0, 2.0])
    assert res.p_value is None and res.statistic is None
    assert res.note and res.n1 == 0


def test_mann_whitney_all_values_tied() -> None:
    res = st.continuous_test([2, 2, 2], [2, 2])
    assert res.p_value == 1.0
    assert res.note == "all values tied"


def test_mann_whitney_large_groups_fall_back_to_asymptotic() -> None:
    n = st.MWU_EXACT_MAX_N + 1
    res = st.continuous_test([float(i) for i in range(n)], [i + 0.5 for i in range(n)])
    assert res.name == "mann_whitney_asymptotic"


def test_ordinal_grades_are_tied_so_asymptotic() -> None:
    cart1, cart2 = [0, 1, 1, 2, 2, 2, 3, 1, 0], [0, 0, 1, 1, 0, 2, 0, 1, 0]
    res = st.ordinal_test(cart1, cart2)
    assert res == st.continuous_test(cart1, cart2)
    assert res.name == "mann_whitney_asymptotic"


# ---------- Wilcoxon signed-rank ----------


def test_wilcoxon_approx_reproduces_published_p() -> None:
    # T = 1 of n = 9: only the smallest |difference| has the minority sign.
    cart1 = [10, 12, 13, 14, 15, 16, 17, 18, 19]
    cart2 = [11, 10, 10, 10, 10, 10, 10, 10, 10]
    res = st.paired_continuous_test(list(zip(cart1, cart2, strict=True)))
    assert res.name == "wilcoxon_signed_rank_approx"
    assert res.statistic == 1
    assert res.p_value == pytest.approx(0.0109, abs=5e-5)
    diffs = [a - b for a, b in zip(cart1, cart2, strict=True)]
    assert res.p_value == pytest.approx(signed_rank_normal(diffs), rel=1e-9)
    assert st.format_p(res.p_value) == ".011"


def test_wilcoxon_exact_cannot_give_011() -> None:
    cart1 = [10, 12, 13, 14, 15, 16, 17, 18, 19]
    cart2 = [11, 10, 10, 10, 10, 10, 10, 10, 10]
    pairs = list(zip(cart1, cart2, strict=True))
    res = st.paired_continuous_test(pairs, method="exact")
    assert res.name == "wilcoxon_signed_rank_exact"
    diffs = [a - b for a, b in pairs]
    assert res.p_value == pytest.approx(signed_rank_exact(diffs), rel=1e-9)
    assert res.p_value == pytest.approx(4 / 512)  # 0.0078, the step below .011


@pytest.mark.parametrize(
    "diffs",
    [[1.5, -2.5, 3.5, 4.5, -0.5, 6.0], [3.0, 1.0, 2.0, 5.0], [-7.0, 2.0, -1.0, 4.0, 8.0, -3.0]],
)
def test_wilcoxon_exact_matches_sign_enumeration(diffs: list[float]) -> None:
    res = st.paired_continuous_test([(d, 0.0) for d in diffs], method="exact")
    assert res.p_value == pytest.approx(signed_rank_exact(diffs), rel=1e-9)


def test_wilcoxon_zero_differences_dropped_and_ties_handled() -> None:
    pairs = [(5, 5), (3, 1), (4, 2), (1, 4), (7, 3), (9, 2), (2, 2)]
    diffs = [a - b for a, b in pairs]
    res = st.paired_continuous_test(pairs)
    assert res.n1 == 7
    assert "2 zero differences dropped" in res.note
    assert res.p_value == pytest.approx(signed_rank_normal(diffs), rel=1e-9)


def test_wilcoxon_exact_with_tied_differences_falls_back() -> None:
    pairs = [(3, 1), (4, 2), (1, 4), (7, 3), (9, 2)]
    res = st.paired_continuous_test(pairs, method="exact")
    assert res.name == "wilcoxon_signed_rank_approx"
    assert "ties" in res.note


def test_wilcoxon_rejects_unknown_method() -> None:
    with pytest.raises(ValueError):
        st.paired_continuous_test([(1.0, 2.0)], method="auto")  # type: ignore[arg-type]


def test_wilcoxon_without_nonzero_pairs_has_no_p() -> None:
    res = st.paired_continuous_test([(1.0, 1.0), (2.0, 2.0), (None, 3.0)])
    assert res.p_value is None and res.n1 == 2
    assert "no nonzero" in res.note
    assert st.paired_continuous_test([]).p_value is None


# ---------- summaries and formatting ----------


def test_summarize_linear_percentiles() -> None:
    xs = [7.0, 1.0, 3.0, 10.0, 4.0, 2.5]
    s = st.summarize(xs + [None, float("nan")])
    assert s.n == 6 and s.min == 1.0 and s.max == 10.0
    assert s.median == pytest.approx(percentile_linear(xs, 0.5))
    assert s.q1 == pytest.approx(percentile_linear(xs, 0.25))
    assert s.q3 == pytest.approx(percentile_linear(xs, 0.75))
    assert (s.q1, s.median, s.q3) == pytest.approx((2.625, 3.5, 6.25))
    assert s.method == "linear"


def test_summarize_spss_haverage() -> None:
    # Type 6: position (n + 1)p, here 1.75 and 5.25 of the sorted values.
    s = st.summarize([1.0, 2.5, 3.0, 4.0, 7.0, 10.0], method="weibull")
    assert (s.q1, s.q3) == pytest.approx((1.0 + 0.75 * 1.5, 7.0 + 0.25 * 3.0))


def test_summarize_empty() -> None:
    assert st.summarize([None]) == st.Summary(0, None, None, None, None, None)


@pytest.mark.parametrize(
    "p,text",
    [
        (0.029411764705882356, ".029"),
        (0.5764705882352941, ".576"),
        (0.5765, ".577"),  # a pre-rounded p rounds the other way: pass computed values
        (0.0625, ".063"),  # half up, as SPSS prints
        (0.0106, ".011"),
        (0.00099, "<.001"),
        (0.0, "<.001"),
        (0.001, ".001"),
        (0.05, ".050"),
        (0.9996, "1.000"),
        (1.0, "1.000"),
        (1.0000000000002, "1.000"),
        (None, "–"),
        (float("nan"), "–"),
    ],
)
def test_format_p(p: float | None, text: str) -> None:
    assert st.format_p(p) == text


def test_format_p_accepts_numpy_floats() -> None:
    assert st.format_p(np.float64(0.0625)) == ".063"


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_format_p_rejects_impossible(p: float) -> None:
    with pytest.raises(ValueError):
        st.format_p(p)


@pytest.mark.parametrize("count,shown", [(0, 0), (1, "<5"), (4, "<5"), (5, 5), (12, 12)])
def test_small_cell(count: int, shown: int | str) -> None:
    assert st.small_cell(count, 5) == shown


def test_small_cell_rejects_negative() -> None:
    with pytest.raises(ValueError):
        st.small_cell(-1, 5)


# ---------- Kaplan–Meier ----------

KM_TIMES = [2, 3, 3, 5, 6, 8, 9, 12, None]
KM_EVENTS = [1, 1, 0, 1, 0, 1, 1, 0, 1]


def product_limit(times: list[float], events: list[int]) -> list[tuple]:
    """(time, at_risk, events, S, var_sum) at each distinct time, by hand."""
    rows, s, greenwood = [], 1.0, 0.0
    for t in sorted(set(times)):
        n = sum(1 for u in times if u >= t)
        d = sum(1 for u, e in zip(times, events, strict=True) if u == t and e)
        if d:
            s *= 1 - d / n
            greenwood += d / (n * (n - d)) if n > d else math.nan
        rows.append((t, n, d, s, greenwood))
    return rows


def loglog_band(s: float, greenwood: float) -> tuple[float, float]:
    se = math.sqrt(greenwood) / abs(math.log(s))
    return s ** math.exp(Z975 * se), s ** math.exp(-Z975 * se)


def test_kaplan_meier_matches_product_limit() -> None:
    km = st.kaplan_meier(KM_TIMES, KM_EVENTS)
    times, events = KM_TIMES[:-1], KM_EVENTS[:-1]  # the pair with a missing time is dropped
    ref = product_limit(times, events)
    assert km.n == 8 and km.n_events == 5
    assert [r.time for r in km.table] == [r[0] for r in ref]
    assert [r.at_risk for r in km.table] == [8, 7, 5, 4, 3, 2, 1]
    assert [r.events for r in km.table] == [1, 1, 1, 0, 1, 1, 0]
    assert [r.censored for r in km.table] == [0, 1, 0, 1, 0, 0, 1]
    assert [r.survival for r in km.table] == pytest.approx([r[3] for r in ref])
    assert [r.survival for r in km.table] == pytest.approx([7 / 8, 0.75, 0.6, 0.6, 0.4, 0.2, 0.2])
    for row, (_, _, _, s, gw) in zip(km.table, ref, strict=True):
        low, high = loglog_band(s, gw)
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high), rel=1e-9)

    assert km.median == 8  # first time S <= 0.5
    bands = [(r[0], *loglog_band(r[3], r[4])) for r in ref]
    # The median CI is the set of times whose band contains 0.5.
    assert km.median_ci_low == next(t for t, lo, _ in bands if lo <= 0.5) == 2
    assert next((t for t, _, hi in bands if hi <= 0.5), None) is None
    assert km.median_ci_high is None  # upper band stays above 0.5: not reached
    assert km.ci_method == "log-log" and km.confidence_level == 0.95


def test_kaplan_meier_linear_band_is_greenwood() -> None:
    km = st.kaplan_meier(KM_TIMES[:-1], KM_EVENTS[:-1], ci_method="linear")
    for row, (_, _, _, s, gw) in zip(
        km.table, product_limit(KM_TIMES[:-1], KM_EVENTS[:-1]), strict=True
    ):
        half = Z975 * s * math.sqrt(gw)
        assert row.ci_low == pytest.approx(max(0.0, s - half), abs=1e-12)
        assert row.ci_high == pytest.approx(min(1.0, s + half), abs=1e-12)


def test_kaplan_meier_all_events() -> None:
    km = st.kaplan_meier([4, 1, 3, 2], [True] * 4)
    assert [r.survival for r in km.table] == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert km.median == 2  # S = 0.5 exactly at 2; R would report (2 + 3) / 2
    last = km.table[-1]
    assert last.survival == 0 and last.ci_low is None and last.ci_high is None
    # The band is undefined at S = 0, so it never brings the upper bound below 0.5.
    assert (km.median_ci_low, km.median_ci_high) == (1, None)


def test_kaplan_meier_nine_events_like_the_efs_cohort() -> None:
    times = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    km = st.kaplan_meier(times, [1] * 9)
    ref = product_limit(times, [1] * 9)
    assert [r.survival for r in km.table] == pytest.approx([(9 - i) / 9 for i in range(1, 10)])
    bands = [(t, *loglog_band(s, gw)) for t, _, _, s, gw in ref[:-1]]
    assert km.median == 5
    assert km.median_ci_low == next(t for t, lo, _ in bands if lo <= 0.5) == 1
    assert km.median_ci_high == next(t for t, _, hi in bands if hi <= 0.5) == 8


def test_kaplan_meier_all_censored() -> None:
    km = st.kaplan_meier([5, 7, 7], [0, 0, False])
    assert km.n == 3 and km.n_events == 0
    assert [r.survival for r in km.table] == [1.0, 1.0]
    assert all(r.ci_low is None and r.ci_high is None for r in km.table)
    assert (km.median, km.median_ci_low, km.median_ci_high) == (None, None, None)


def test_kaplan_meier_median_not_reached() -> None:
    km = st.kaplan_meier([1, 2, 3, 4, 5], [1, 0, 0, 0, 0])
    assert km.median is None and km.median_ci_high is None
    assert km.median_ci_low == 1  # the lower band (0.20) already contains 0.5


def test_kaplan_meier_empty_and_invalid() -> None:
    km = st.kaplan_meier([], [])
    assert km.n == 0 and km.table == () and km.median is None
    with pytest.raises(ValueError):
        st.kaplan_meier([1, 2], [1])
    with pytest.raises(ValueError):
        st.kaplan_meier([-1, 2], [1, 1])


def test_every_test_the_functions_name_has_one_human_name() -> None:
    made = {st.proportion_test(1, 2, 1, 2).name, st.paired_proportion_test([(1, 0)]).name,
            st.continuous_test([1, 2], [3, 4]).name, st.continuous_test([1, 1], [1, 2]).name,
            st.continuous_test([], [1, 2]).name,  # no values: no method chosen
            st.paired_continuous_test([(1, 2), (3, 5)]).name,
            st.paired_continuous_test([(1, 2), (3, 5)], method="exact").name}
    assert made <= set(st.TEST_NAMES)
    assert all(st.test_name(name) == st.TEST_NAMES[name] for name in made)
    assert "_" not in "".join(st.TEST_NAMES.values())
    assert st.test_name(None) == "–" and st.test_name("unknown_test") == "unknown_test"
