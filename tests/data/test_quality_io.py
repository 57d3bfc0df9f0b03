"""Quality classifiers are saved as plain arrays and reload to identical scores, never through pickle."""

import zipfile

import numpy as np

from hytron.data.quality import QualityModel


def test_saved_classifiers_reload_to_identical_scores_without_pickle(tmp_path):
    good = [f"The river {w} flows past the old mill and the market town of {w}." for w in "abcdefghijkl"]
    junk = [f"buy cheap {w} now click here best price {w} {w} {w}" for w in "abcdefghijkl"]
    model = QualityModel.train(good, junk, ["linear", "bayes"], seed=0)
    probe = ["The river flows past the mill.", "click here buy now cheap price"]
    before = model.score(probe)
    assert before["linear"][0] > before["linear"][1] and before["bayes"][0] > before["bayes"][1]
    model.save(tmp_path)
    for f in tmp_path.iterdir():
        assert f.suffix == ".npz"
        with zipfile.ZipFile(f) as z:  # every member is a raw .npy array, no object arrays
            assert all(n.endswith(".npy") for n in z.namelist())
    after = QualityModel.load(tmp_path).score(probe)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
