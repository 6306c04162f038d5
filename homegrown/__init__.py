"""homegrown: from an AI assistant's logs to the business's own small model (no Dagster import here)."""

__version__ = "0.1.0"
