"""What makes a claim's figure trustworthy: per-seed estimates with 95% intervals, verdicts, content hashes, overlap.

    est = estimate([6.1, 5.4, 7.0])                   # mean, sd, 95% t-interval of the per-seed values
    ratio = log_estimate([6.1, 5.4, 7.0])             # ratios: geometric mean, interval of the mean log
    verdict(est, 5.0)                                 # "met" only when the whole interval clears the threshold
    claim_verdict(criteria, [gate("QA above chance", qa > 0.6, qa, ">= 60%")])  # "not valid" if a gate fails
    apply_gates(criteria, gates)                      # ...and then each criterion says "not valid" too
    overlap(eval_texts, train_texts)                  # eval items whose normalised text occurs in training

A verdict is read off the interval, never the point estimate: "met" when the interval lies entirely on the
good side of the threshold, "not met" when it lies entirely on the other side, "inconclusive" when it
straddles it (or there is one seed, so no interval). Content checks compare normalised text (case and
whitespace folded), so an evaluation item that reappears verbatim in any training pool is caught whatever
its id or seed.

Ratios (speed-ups, token ratios) are averaged and bounded on the log scale: the per-seed logs get the
t-interval and it is exponentiated back, so the interval of a ratio is never negative and a 2x and a 0.5x
seed cancel. A claim's validity gates say whether the experiment could have shown the effect at all (the
arms separate, the control behaves); when any gate fails the verdict is "not valid", never "met" or
"not met", whatever the interval says.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence

# two-sided 95% Student-t critical values t_{0.975, df} for df = 1..30 (standard tables), then the tables' sparse
# points beyond, interpolated linearly in 1/df (the usual rule; within 0.001 of the exact value) up to 1.96 at df = inf
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T975_SPARSE = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))
VERDICTS = ("met", "not met", "inconclusive", "not valid")


def t_critical(df: int) -> float:
    """t_{0.975} with `df` degrees of freedom (the 95% two-sided multiplier)."""
    if df < 1:
        raise ValueError(f"t_critical: df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    # 1.96 straight after df 30 would be a jump from 2.042 (an interval too narrow for 31..~200 values)
    for (d0, t0), (d1, t1) in zip(_T975_SPARSE, _T975_SPARSE[1:]):
        if df <= d1:
            w = (1 / d0 - 1 / df) / (1 / d0 - 1 / d1)
            return t0 + w * (t1 - t0)
    return 1.96


def estimate(values: Sequence[float | None]) -> dict:
    """Per-seed values -> {per_seed, n, mean, sd, ci95: [lo, hi] | None, method}. `None` values (a run that
    never reached its target) are kept in `per_seed`, counted in `missing`, and left out of the statistics."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(vals)
    out = {"per_seed": _per_seed(values), "n": n, "missing": len(values) - n, "mean": None, "sd": None, "ci95": None,
           "method": "mean ± t(0.975, n-1) · sd/√n over seeds"}
    if n == 0:
        return out
    mean = sum(vals) / n
    out["mean"] = mean
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        half = t_critical(n - 1) * sd / math.sqrt(n)
        out.update(sd=sd, ci95=[mean - half, mean + half])
    return out


def _per_seed(values: Sequence[float | None]) -> list[float | None]:
    """The per-seed values as result.json holds them: a non-finite value (a diverged run) is None, as JSON has no
    NaN or infinity (json.dumps would write the bare word NaN, which strict readers reject)."""
    return [None if v is None or not math.isfinite(v) else v for v in values]


def log_estimate(values: Sequence[float | None]) -> dict:
    """Per-seed RATIOS -> the `estimate` keys on the log scale: `mean` is the geometric mean and `ci95` is
    exp(mean(log v) ± t(0.975, n-1) · sd(log v)/√n); `log_sd` is the sd of the logs, `sd` the ratios' sample sd.
    `None` (and NaN) values are missing, as in `estimate`; a ratio <= 0 is an error (a ratio of two positive
    quantities cannot be)."""
    bad = [v for v in values if v is not None and math.isfinite(v) and v <= 0]
    if bad:
        raise ValueError(f"log_estimate: ratios must be > 0, got {bad}")
    logs = estimate([math.log(v) if v is not None and math.isfinite(v) else None for v in values])
    out = {"per_seed": _per_seed(values), "n": logs["n"], "missing": logs["missing"], "mean": None, "sd": None,
           "log_sd": logs["sd"], "ci95": None,
           "method": "geometric mean; exp(mean log ± t(0.975, n-1) · sd(log)/√n) over seeds"}
    if logs["mean"] is not None:
        out["mean"] = math.exp(logs["mean"])
    if logs["ci95"] is not None:
        out["ci95"] = [math.exp(logs["ci95"][0]), math.exp(logs["ci95"][1])]
        out["sd"] = estimate(values)["sd"]  # the ratios' own sample sd (about their arithmetic mean), for reference
    return out


def verdict(est: dict, threshold: float, higher_is_better: bool = True) -> str:
    """"met" / "not met" / "inconclusive" from the 95% interval of `est` against `threshold`."""
    ci = est.get("ci95")
    if not ci:
        return "inconclusive"
    lo, hi = ci
    if higher_is_better:
        return "met" if lo >= threshold else "not met" if hi < threshold else "inconclusive"
    return "met" if hi <= threshold else "not met" if lo > threshold else "inconclusive"


def criterion(name: str, est: dict, threshold: float, higher_is_better: bool = True) -> dict:
    """One goal of a claim: the estimate, its threshold and the verdict its interval gives."""
    return {"name": name, "threshold": threshold, "higher_is_better": higher_is_better, **est,
            "verdict": verdict(est, threshold, higher_is_better)}


def overall(criteria: Sequence[dict]) -> str:
    """A claim is met when every criterion is; not met when any is not; inconclusive otherwise."""
    vs = [c["verdict"] for c in criteria]
    return "not met" if "not met" in vs else "met" if vs and all(v == "met" for v in vs) else "inconclusive"


def gate(name: str, passed: bool, value, rule: str) -> dict:
    """One validity gate of a claim: a condition the experiment must meet before its interval means anything
    (e.g. "the label-curated arm beats raw on QA"). `value` is what was measured, `rule` the condition."""
    return {"name": name, "passed": bool(passed), "value": value, "rule": rule}


def claim_verdict(criteria: Sequence[dict], gates: Sequence[dict]) -> str:
    """"not valid" when any gate failed (the experiment cannot confirm or refute the claim), else `overall`."""
    return "not valid" if any(not g["passed"] for g in gates) else overall(criteria)


def apply_gates(criteria: Sequence[dict], gates: Sequence[dict]) -> None:
    """When a gate failed, every criterion's `verdict` becomes "not valid" too (in place), its interval's reading
    kept as `interval_verdict`: a criterion that says "met" beside a claim that is "not valid" would be read as
    a result. Idempotent; nothing changes when every gate passed."""
    if all(g["passed"] for g in gates):
        return
    for c in criteria:
        if "interval_verdict" not in c:
            c["interval_verdict"] = c["verdict"]
        c["verdict"] = "not valid"


def difference(a: Sequence[float | None], b: Sequence[float | None]) -> dict:
    """Paired per-seed difference a - b (same seed, same data order) with its interval; `separable` when the
    interval excludes 0. A seed missing on either side (None: e.g. a diverged run) is missing in the difference."""
    if len(a) != len(b):
        raise ValueError(f"difference: paired values need one per seed on each side, got {len(a)} and {len(b)}")
    est = estimate([None if x is None or y is None else x - y for x, y in zip(a, b)])
    est["separable"] = bool(est["ci95"] and (est["ci95"][0] > 0 or est["ci95"][1] < 0))
    return est


# ---- content ---------------------------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """Case and whitespace folded: what "the same text" means for contamination checks."""
    return " ".join(text.lower().split())


def content_hash(texts: Iterable[str]) -> str:
    """sha256 over the normalised texts in order: the identity of a data set in result.json."""
    h = hashlib.sha256()
    n = 0
    for t in texts:
        h.update(normalise(t).encode())
        h.update(b"\x00")
        n += 1
    return f"sha256:{h.hexdigest()[:16]}:{n}"


def overlap(eval_texts: Iterable[str], train_texts: Iterable[str], ngram: int = 0) -> int:
    """How many evaluation texts occur in the training texts: exactly (after normalisation) when `ngram` is 0,
    else when any word `ngram`-gram of the evaluation text occurs inside a training text (the usual 13-gram
    decontamination test; it also catches an evaluation document pasted inside a longer page)."""
    if not ngram:
        seen = {normalise(t) for t in train_texts}
        return sum(normalise(e) in seen for e in eval_texts)
    return decontaminate(list(eval_texts), str, train_texts, ngram)[1]


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text)
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def decontaminate(items: Sequence, text_of, train_texts: Iterable[str], ngram: int = 13) -> tuple[list, int]:
    """(kept items, removed count): items whose text shares a word `ngram`-gram with any training text are
    dropped (for short items, e.g. questions, shorter than the n-gram: their whole word sequence)."""
    grams: set[tuple[str, ...]] = set()
    texts = [normalise(t) for t in train_texts]
    for t in texts:
        grams.update(_ngrams(t, ngram))
    joined = "\n".join(texts)
    kept = []
    for it in items:
        e = normalise(text_of(it))
        short = len(re.findall(r"\w+", e)) < ngram
        hit = (e in joined) if short else bool(_ngrams(e, ngram) & grams)
        if not hit:
            kept.append(it)
    return kept, len(items) - len(kept)
