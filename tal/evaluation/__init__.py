"""``tal eval``: the paper's comparisons at CPU scale, written to docs/results.{md,json}."""
