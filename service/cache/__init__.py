"""Two-tier blob cache (in-process LRU, Redis) with single-flight computation."""
