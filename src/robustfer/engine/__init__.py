"""Training and evaluation engine: metrics, plots and the loops that use them."""
