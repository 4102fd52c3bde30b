"""infscale: spend more compute at inference time, choose well, and measure what it bought.

The public surface is pinned by ``__all__`` (and a test). Heavy backends (llama.cpp, vLLM,
torch) are imported lazily, only when a generator that needs them is created.
"""

from .api import ask, load_generator
from .errors import BackendError, ConfigError, InfscaleError
from .params import Budget, SamplingParams
from .strategies import STRATEGIES, get_strategy
from .strategies.runner import run
from .types import AnswerMass, Candidate, Completion, GenRequest, Problem, Result, Usage

__version__ = "0.1.0"

__all__ = [
    "ask",
    "run",
    "load_generator",
    "Problem",
    "SamplingParams",
    "Budget",
    "Result",
    "Candidate",
    "AnswerMass",
    "Usage",
    "GenRequest",
    "Completion",
    "STRATEGIES",
    "get_strategy",
    "InfscaleError",
    "ConfigError",
    "BackendError",
    "__version__",
]
