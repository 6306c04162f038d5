"""A labelled PII set in four locales (en_US, en_GB, de_DE, fr_FR), written apart from the anonymiser's cues.

``generate("dev")`` / ``generate("heldout")`` render hand-written customer messages and assistant answers
with labelled names, e-mails, phones, street addresses, card numbers, IBANs and order / booking ids. The two
halves use different templates; ``dev.jsonl`` holds the dev half, the held-out half is only ever generated.
"""

from .generate import (
    DEV_PATH,
    LABELLED_KINDS,
    MIN_PER_KIND,
    SEED,
    SPLITS,
    Example,
    Span,
    generate,
    label_problems,
    read_jsonl,
    write_jsonl,
)
from .values import LOCALES

__all__ = ["DEV_PATH", "LABELLED_KINDS", "LOCALES", "MIN_PER_KIND", "SEED", "SPLITS", "Example", "Span", "generate",
           "label_problems", "read_jsonl", "write_jsonl"]
