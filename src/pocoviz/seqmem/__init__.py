"""Long sequence Hopfield memories (spec ``seq_hopfield.md``): SeqNet, dense (polynomial and
exponential) sequence memories, the generalized pseudoinverse rule, MixedNet (variable timing), the
two-layer form; capacity theory and simulation. Torch on the backend device; no UI imports."""

from __future__ import annotations

from .capacity import BETA, capacity_estimate, capacity_paper_protocol, capacity_theory, success_rates
from .models import BipartiteNet, DenseNet, MixedNet, PseudoinverseNet, Recall, SequenceModel, make_model, recall, separation, transitions_ok
from .patterns import digit_patterns, image_shape, random_patterns

__all__ = [
    "BETA", "BipartiteNet", "DenseNet", "MixedNet", "PseudoinverseNet", "Recall", "SequenceModel", "capacity_estimate",
    "capacity_paper_protocol", "capacity_theory", "digit_patterns", "image_shape", "make_model", "random_patterns", "recall",
    "separation", "success_rates", "transitions_ok",
]  # fmt: skip
