"""Market regimes: documented rules over the bars (:mod:`quantum.regime.rules`), the scoring
of each call against what followed (:mod:`quantum.regime.scoring`), and the view other
services read of the meta-regime's state key (:mod:`quantum.regime.view`)."""
