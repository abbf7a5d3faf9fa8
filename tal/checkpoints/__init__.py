"""Learngene checkpoints: the model store, the learngene (hypernetwork + task embeddings +
ancestry model) and the provenance recorded beside them."""
