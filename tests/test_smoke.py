import numpy as np

import masked_losses as ml


def test_masked_mse_matches_valid_subset(xp):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(5, 3)).astype(np.float32)
    t = rng.normal(size=(5, 3)).astype(np.float32)
    m = rng.random((5, 3)) < 0.5
    t_garbage = np.where(m, t, np.nan).astype(np.float32)
    out = xp.run(ml.masked_mse, xp.asarray(p), xp.asarray(t_garbage), xp.asarray(m))
    expected = np.mean((p[m].astype(np.float64) - t[m]) ** 2)
    np.testing.assert_allclose(xp.to_numpy(out), expected, rtol=1e-5)
