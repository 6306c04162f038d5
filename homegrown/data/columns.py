"""Column contracts of the data half's tables (pandas DataFrames between stages).

Nested values (messages, tools, critic, feedback, metadata) are Python objects in a DataFrame and JSON
strings on disk (SQLite, CSV, Parquet).

INTERACTION_COLUMNS: one row per interaction id after ingestion (newest row per id, feedback merged):
    id               str   unique interaction id
    conversation_id  str   defaults to id
    created_at       str   ISO-8601 UTC, normalised as "YYYY-MM-DDTHH:MM:SS.ffffffZ"
    org_id           str | None
    example_type     str   defaults to "chat"
    model            str | None
    messages         list[dict]  OpenAI chat messages; the last one is the assistant answer
    tools            list | None OpenAI tool schemas offered in this turn
    teacher_response str | None
    student_response str | None
    critic           dict | None  {"best_response", "quality_score", "reason"}
    ground_truth     str | None
    feedback         dict         merged feedback fields ({} when none)
    metadata         dict         carried through, never trained on
    source           str          "<file>:<line>" of the row that won

EXAMPLE_COLUMNS: one row per training example (synthetic_examples and scored_dataset):
    example_id       str   stable content hash
    conversation_id  str
    org_id           str | None
    example_type     str
    messages         list[dict]   what the model learns from (answer last)
    tools            list | None
    source_ids       list[str]    ids of the raw interactions this example came from ([] for synthetic)
    synthetic        bool
    generator        str | None   e.g. "template" or "openai:gpt-4o-mini" for synthetic rows
    source_fact      str | None   the knowledge-file fact a synthetic row was generated from
    created_at       str
scored_dataset adds:
    score            float        0..10 quality score
    keep             bool
    reason           str          why it was kept or dropped
"""

INTERACTION_COLUMNS = [
    "id", "conversation_id", "created_at", "org_id", "example_type", "model", "messages", "tools",
    "teacher_response", "student_response", "critic", "ground_truth", "feedback", "metadata", "source",
]
JSON_INTERACTION_COLUMNS = ["messages", "tools", "critic", "feedback", "metadata"]

EXAMPLE_COLUMNS = [
    "example_id", "conversation_id", "org_id", "example_type", "messages", "tools", "source_ids",
    "synthetic", "generator", "source_fact", "created_at",
]
SCORED_COLUMNS = EXAMPLE_COLUMNS + ["score", "keep", "reason"]
JSON_EXAMPLE_COLUMNS = ["messages", "tools", "source_ids"]

SPLITS = ("train", "validation", "test")
