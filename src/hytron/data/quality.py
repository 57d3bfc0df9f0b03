"""Model-based quality: "reference vs random" classifiers, their ensemble, and Nemotron-CC quality buckets.

Two classifier kinds are trained offline on the same data (DCLM's recipe, scaled down): positives are
high-quality reference documents, negatives a deterministic sample of the input crawl.
- `linear`: logistic-loss SGD on L2-normalised hashed word 1-2 gram counts (2**20 features); P(reference).
- `bayes`: multinomial naive Bayes on the same counts; log-odds of reference.
(fastText was measured first: `fasttext-numpy2-wheel` 0.9.2 raised "Encountered NaN" when a second model was
trained in the same process, so it is not used.) Higher scores mean more reference-like.
Buckets follow the Nemotron-CC recipe: per classifier, token-weighted score
percentiles at 5, 10, ..., 95 map a score to an integer bin 0..19; a document's bin is the maximum over
classifiers; bins map to 5 buckets: 19 -> 4 (high), 18 -> 3, 12-17 -> 2, 7-11 -> 1, 0-6 -> 0 (low).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_NL = re.compile(r"\s+")
_PERCENTILES = np.arange(5, 100, 5)  # 19 cut points -> 20 bins


def _clean(text: str) -> str:
    return _NL.sub(" ", text.lower()).strip()


def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    # counts of hashed word 1-2 grams; stateless, so nothing but the classifiers needs saving
    return HashingVectorizer(n_features=2**20, ngram_range=(1, 2), alternate_sign=False, norm=None)


class QualityModel:
    """The trained classifiers; `score(texts)` gives {name: float32[len(texts)]}, higher = more reference-like.

    Both classifiers are linear in the same hashed n-gram counts (vectorised once per batch), so each is kept
    as a weight vector and a bias: naive Bayes' log-odds are `counts @ (log P(f|ref) - log P(f|random)) +
    (log prior ratio)`; the logistic model scores `sigmoid(normalize(counts) @ coef + intercept)`. They are saved
    as plain arrays (`.npz`, loaded with allow_pickle=False): nothing is ever unpickled."""

    def __init__(self, models: dict[str, tuple[np.ndarray, float]]):
        self.models = models  # name -> (weights float64[2**20], bias)
        self._vec = _vectorizer()

    @property
    def names(self) -> list[str]:
        return sorted(self.models)

    @classmethod
    def train(cls, reference: list[str], random_docs: list[str], kinds: list[str], seed: int = 0) -> QualityModel:
        if len(reference) < 10 or len(random_docs) < 10:
            raise ValueError(f"quality: need at least 10 reference and 10 random documents to train, got "
                             f"{len(reference)} and {len(random_docs)}")
        from sklearn.linear_model import SGDClassifier
        from sklearn.naive_bayes import MultinomialNB
        from sklearn.preprocessing import normalize

        texts = [_clean(t) for t in reference] + [_clean(t) for t in random_docs]
        labels = np.array([1] * len(reference) + [0] * len(random_docs))
        order = np.random.default_rng(seed).permutation(len(texts))
        counts = _vectorizer().transform([texts[i] for i in order])
        models: dict[str, tuple[np.ndarray, float]] = {}
        if "bayes" in kinds:
            nb = MultinomialNB(alpha=0.1).fit(counts, labels[order])
            models["bayes"] = (nb.feature_log_prob_[1] - nb.feature_log_prob_[0],
                               float(nb.class_log_prior_[1] - nb.class_log_prior_[0]))
        if "linear" in kinds:
            clf = SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=20, tol=None, random_state=seed)
            clf.fit(normalize(counts), labels[order])
            models["linear"] = (clf.coef_[0].astype(np.float64), float(clf.intercept_[0]))
        return cls(models)

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        if not texts:
            return {}
        from sklearn.preprocessing import normalize

        counts = self._vec.transform([_clean(t) for t in texts])
        out = {}
        if "bayes" in self.models:
            w, b = self.models["bayes"]
            out["bayes"] = (counts @ w + b).astype(np.float32)  # log-odds: continuous, ties are rare
        if "linear" in self.models:
            w, b = self.models["linear"]
            out["linear"] = (1.0 / (1.0 + np.exp(-(normalize(counts) @ w + b)))).astype(np.float32)
        return out

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, (w, b) in self.models.items():
            np.savez(folder / f"{name}.npz", weights=w, bias=np.array(b))

    @classmethod
    def load(cls, folder: str | Path) -> QualityModel:
        folder = Path(folder)
        models = {}
        for p in sorted(folder.glob("*.npz")):
            with np.load(p, allow_pickle=False) as z:
                models[p.stem] = (z["weights"], float(z["bias"]))
        if not models:
            raise FileNotFoundError(f"no quality classifiers in {folder}")
        return cls(models)


def percentile_thresholds(scores: np.ndarray, tokens: np.ndarray) -> list[float]:
    """Token-weighted score percentiles at 5, 10, ..., 95 (19 values, non-decreasing)."""
    if len(scores) == 0:
        return [0.0] * len(_PERCENTILES)
    order = np.argsort(scores, kind="stable")
    s, w = scores[order], np.maximum(tokens[order], 1).astype(np.float64)
    cum = np.cumsum(w) / w.sum() * 100
    pos = np.searchsorted(cum, _PERCENTILES, side="left").clip(0, len(s) - 1)
    return [float(x) for x in s[pos]]


def bucket_of_bin(b: int) -> int:
    return 4 if b >= 19 else 3 if b == 18 else 2 if b >= 12 else 1 if b >= 7 else 0


def assign_buckets(scores: dict[str, np.ndarray], thresholds: dict[str, list[float]]) -> np.ndarray:
    """Bucket 0..4 per document: max over classifiers of the score's percentile bin, mapped as above."""
    bins = None
    for name, s in scores.items():
        b = np.digitize(s, thresholds[name], right=False)  # 0..19
        bins = b if bins is None else np.maximum(bins, b)
    assert bins is not None, "assign_buckets needs at least one classifier"
    return np.array([bucket_of_bin(int(b)) for b in bins], dtype=np.int64)
