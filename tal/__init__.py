"""TAL: Task-Aware Learngene — task-aware initial weights for transformers of any size."""

from tal.specs import GPT2Spec, SpecError, ViTSpec, parse_arch

__version__ = "0.1.0"
__all__ = ["GPT2Spec", "SpecError", "ViTSpec", "__version__", "parse_arch"]
