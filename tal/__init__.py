"""TAL: Task-Aware Learngene — task-aware initial weights for transformers of any size."""

from tal.arch.parse import parse_arch
from tal.arch.specs import GPT2Spec, SpecError, ViTSpec

__version__ = "0.1.0"
__all__ = ["GPT2Spec", "SpecError", "ViTSpec", "__version__", "parse_arch"]
