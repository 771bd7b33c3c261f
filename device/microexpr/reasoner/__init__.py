"""LLM reasoner for ambiguous episodes (issue 6).

Only AU evidence is queued and sent (see ``docs/reasoner.md`` for exactly
what leaves the device); the inference loop only ever writes one SQLite row
(:meth:`Reasoner.submit`); worker threads ask an OpenAI-compatible API with
structured output, inside a daily budget, and hand each answer to the
service as a :class:`Refinement`.
"""

from microexpr.reasoner.evaluation import refine_rows
from microexpr.reasoner.prompt import PROMPT_VERSION
from microexpr.reasoner.refinement import BudgetState, ReasonerState, Refinement
from microexpr.reasoner.request import AUEvidence, LocalVerdict, ReasonerRequest
from microexpr.reasoner.settings import ReasonerSettings
from microexpr.reasoner.store import StoreError
from microexpr.reasoner.worker import OnRefined, Reasoner, SubmitOutcome

__all__ = [
    "PROMPT_VERSION",
    "AUEvidence",
    "BudgetState",
    "LocalVerdict",
    "OnRefined",
    "Reasoner",
    "ReasonerRequest",
    "ReasonerSettings",
    "ReasonerState",
    "Refinement",
    "StoreError",
    "SubmitOutcome",
    "refine_rows",
]
