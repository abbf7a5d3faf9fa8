"""HTTP layer: the router, dependencies and one module per route group."""
