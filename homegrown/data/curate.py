"""From ingested interactions (and synthetic examples) to the scored dataset.

Order matters for privacy: opted-out organisations are removed first (their text never reaches a later
step), then rows are scored, every row's text is anonymised, and only then are duplicates collapsed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from homegrown.data.anonymise import Anonymiser
from homegrown.data.columns import SCORED_COLUMNS
from homegrown.data.dedup import dedup_examples
from homegrown.data.quality import QualityPolicy, score_interactions


@dataclass
class CurateResult:
    table: pd.DataFrame  # every interaction and synthetic example, with score, keep and reason
    stats: dict = field(default_factory=dict)
    canaries: pd.DataFrame | None = None  # the planted canary rows as anonymised, apart from the table
    public_values: list[str] = field(default_factory=list)  # the business's own contact data, kept as written
    unrated: str = ""  # what the policy did with valid answers nobody judged, and why

    @property
    def kept(self) -> pd.DataFrame:
        return self.table[self.table["keep"]].reset_index(drop=True)


def curate(
    interactions: pd.DataFrame,
    synthetic: pd.DataFrame,
    policy: QualityPolicy,
    opted_out_orgs: set[str],
    dedup_threshold: float = 0.8,
    canaries: pd.DataFrame | None = None,
    region: str = "US",
    public_min_conversations: int = 3,
) -> CurateResult:
    """Score, filter, anonymise and de-duplicate; every input row stays in the table with its reason.

    ``canaries`` (rows of the table's columns) are anonymised with the rest, then taken out of the table
    and returned apart, so a check can see what anonymisation left of them. ``region`` is the business's
    country (phone numbers without a country code are read in it first). The business's own published
    contact data (``Anonymiser.public_values``: what the assistant volunteered in at least
    ``public_min_conversations`` conversations; 0 turns this off) is kept, so the model can learn it.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    opted_out_mask = interactions["org_id"].isin(opted_out_orgs) if len(interactions) else pd.Series([], dtype=bool)
    allowed = interactions[~opted_out_mask]
    removed = interactions[opted_out_mask]

    scored = score_interactions(allowed, policy)
    unrated = scored.attrs.get("unrated", "")
    timings["score_s"] = time.perf_counter() - t0

    # Opted-out rows are accounted for, with their text dropped: nothing of theirs travels further.
    optout_rows = pd.DataFrame({
        "example_id": removed["id"].map(lambda i: f"optout-{i}"),
        "conversation_id": removed["conversation_id"],
        "org_id": removed["org_id"],
        "example_type": removed["example_type"],
        "messages": [[] for _ in range(len(removed))],
        "tools": [None] * len(removed),
        "source_ids": removed["id"].map(lambda i: [i]),
        "synthetic": False,
        "generator": None,
        "source_fact": None,
        "created_at": removed["created_at"],
        "score": 0.0,
        "keep": False,
        "reason": "dropped: organisation opted out",
    })

    synth = synthetic.copy()
    if len(synth):
        synth = synth[~synth["org_id"].isin(opted_out_orgs)] if "org_id" in synth else synth
        synth["score"] = float("nan")
        synth["keep"] = bool(policy.keep_synthetic)
        synth["reason"] = synth["generator"].map(
            lambda g: f"kept: synthetic ({g})" if policy.keep_synthetic else f"dropped: synthetic ({g}) not kept by policy")

    frames = [f[SCORED_COLUMNS] for f in (scored, synth, optout_rows) if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORED_COLUMNS)

    t1 = time.perf_counter()
    canary_ids = set(canaries["example_id"]) if canaries is not None else set()
    if canary_ids:
        table = pd.concat([table, canaries[SCORED_COLUMNS]], ignore_index=True)
    public: dict[str, str] = {}
    if len(table) and public_min_conversations > 0:
        public = Anonymiser(region=region).public_values(table, min_conversations=public_min_conversations)
    if len(table):
        anonymiser = Anonymiser(region=region, public=public)
        table = anonymiser.anonymise_frame(table, column="messages", group="conversation_id")
    planted = table[table["example_id"].isin(canary_ids)].reset_index(drop=True) if canary_ids else None
    if canary_ids:
        table = table[~table["example_id"].isin(canary_ids)].reset_index(drop=True)
    timings["anonymise_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    kept = table[table["keep"]]
    duplicates = pd.DataFrame()
    if len(kept):
        deduped, duplicates = dedup_examples(kept, threshold=dedup_threshold)
        survivors = deduped.set_index("example_id")["source_ids"]
        table = table.set_index("example_id", drop=False)
        table.loc[survivors.index, "source_ids"] = survivors
        if len(duplicates):
            dup_ids = duplicates["example_id"].tolist()
            table.loc[dup_ids, "keep"] = False
            table.loc[dup_ids, "reason"] = [
                f"dropped: near-duplicate of {k} (jaccard {j:.2f})"
                for k, j in zip(duplicates["duplicate_of"], duplicates["jaccard"])
            ]
        table = table.reset_index(drop=True)
    timings["dedup_s"] = time.perf_counter() - t2

    stats = {
        "interactions": len(interactions),
        "synthetic": len(synth),
        "opted_out": len(removed),
        "kept": int(table["keep"].sum()) if len(table) else 0,
        "dropped": int((~table["keep"]).sum()) if len(table) else 0,
        "duplicates": len(duplicates),
        "public_values": len(public),
        **timings,
    }
    return CurateResult(table=table, stats=stats, canaries=planted, public_values=sorted(public.values()),
                        unrated=unrated)
