"""Sub-commands of the ``tal`` CLI; each module has ``register(subparsers)``."""
