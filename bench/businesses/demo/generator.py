"""The demo business (My Hibachi), written by the project's own demo generator; only the held-out questions
(``heldout.json``) are this benchmark's. The knowledge file goes beside the logs, as a run on the default
input would read it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

NAME = "demo"
TITLE = "My Hibachi (the demo: hibachi caterer, US English, mixed with tools and page JSON, knowledge file)"
KNOWLEDGE = Path(__file__).resolve().parents[3] / "homegrown" / "demo" / "knowledge.json"


def generate(out_dir: Path, seed: int = 0) -> dict[str, Any]:
    from homegrown.demo.generate import generate_demo_logs

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = generate_demo_logs(out_dir, seed=seed)
    shutil.copyfile(KNOWLEDGE, out_dir / "knowledge.json")
    return {"business": NAME, "lines": summary.get("lines"), "interactions": summary.get("interactions"),
            "files": sorted(p.name for p in out_dir.iterdir())}
