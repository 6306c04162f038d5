"""Preference tuning: pairs from trusted corrections in train conversations, thumbs for KTO, DPO that moves the
chosen answer above the rejected one, the preference_adapter asset, the verdict and its report section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch

from homegrown.data.columns import INTERACTION_COLUMNS
from homegrown.data.ingest import ingest
from homegrown.data.quality import QualityPolicy
from homegrown.store import ArtifactStore, to_parquet
from homegrown.training.chat import TOOLS_PREAMBLE
from homegrown.training.preference import (
    PreferenceConfig,
    PreferenceData,
    build_preference_data,
    build_trainer,
    choose_method,
    log_prob_margins,
    tune,
    verdict,
)

SYSTEM = {"role": "system", "content": "You are the assistant of My Hibachi."}
DISHES = [("filet mignon", "$55", "$12"), ("lobster tail", "$48", "$9"), ("chicken", "$30", "$75"),
          ("shrimp", "$35", "$4"), ("salmon", "$38", "$90"), ("scallops", "$42", "$7"),
          ("vegetables", "$25", "$60"), ("kids menu", "$20", "$99"), ("fried rice", "$6", "$31"),
          ("noodles", "$7", "$44")]
APP = {"source": "gateway", "key_id": "key-app", "role": "app"}
ADMIN = {"source": "gateway", "key_id": "key-admin", "role": "admin"}


def interaction(i: int, answer: str | None = None, feedback: dict | None = None, conversation: str | None = None,
                **fields) -> dict:
    dish, _, wrong = DISHES[i % len(DISHES)]
    row = {
        "id": f"int-{i}", "conversation_id": conversation or f"c-{i}", "created_at": f"2026-01-20T10:11:{i % 60:02d}.000000Z",
        "org_id": "org-1", "example_type": "faq", "model": "gpt-4o",
        "messages": [SYSTEM, {"role": "user", "content": f"How much is the {dish} per person?"},
                     {"role": "assistant", "content": answer or f"The {dish} is {wrong} per person, with free wagyu."}],
        "tools": None, "teacher_response": None, "student_response": None, "critic": None, "ground_truth": None,
        "feedback": feedback or {}, "metadata": {}, "source": "logs.jsonl:1",
    }
    row.update(fields)
    return row


def correction(i: int) -> str:
    dish, price, _ = DISHES[i % len(DISHES)]
    return f"The {dish} is {price} per person."


def corrected(i: int, **fields) -> dict:
    return interaction(i, feedback={"thumbs": -1, "admin_correction": correction(i)}, **fields)


def frames(train=(), validation=(), test=()) -> dict[str, pd.DataFrame]:
    """Split tables with one example per (conversation, source ids, question, answer)."""
    def table(rows):
        return pd.DataFrame([{"example_id": f"ex-{conv}", "conversation_id": conv, "source_ids": sources,
                              "messages": [SYSTEM, {"role": "user", "content": question},
                                           {"role": "assistant", "content": answer}]}
                             for conv, sources, question, answer in rows],
                            columns=["example_id", "conversation_id", "source_ids", "messages"])
    return {"train": table(train), "validation": table(validation), "test": table(test)}


def train_rows(*ids: int) -> list:
    return [(f"c-{i}", [f"int-{i}"], "Do you cater weddings?", f"Yes, we cater weddings of every size {i}.")
            for i in ids]


def build(rows: list[dict], split_frames: dict, **kwargs) -> PreferenceData:
    return build_preference_data(pd.DataFrame(rows, columns=INTERACTION_COLUMNS), split_frames, **kwargs)


# ------------------------------------------------------------------------------------------------ the data


def test_a_trusted_correction_is_a_pair_and_an_app_key_correction_is_not():
    rows = [
        corrected(0),  # imported from a file: trusted
        interaction(1, feedback={"admin_correction": correction(1), "admin_correction_provenance": ADMIN},
                    metadata={"provenance": APP}),  # an app's answer, corrected by an admin
        interaction(2, feedback={"admin_correction": correction(2), "admin_correction_provenance": APP},
                    metadata={"provenance": APP}),
        interaction(3, feedback={"admin_correction": correction(3)}, metadata={"provenance": APP}),  # unknown origin
    ]
    data = build(rows, frames(train=train_rows(0, 1, 2, 3)))
    assert [p["interaction_id"] for p in data.pairs] == ["int-0", "int-1"]
    assert data.stats["corrections_untrusted"] == 2
    pair = data.pairs[0]
    assert pair["chosen"] == [{"role": "assistant", "content": correction(0)}]
    assert pair["rejected"][0]["content"].startswith("The filet mignon is $12")
    assert pair["prompt"][-1] == {"role": "user", "content": "How much is the filet mignon per person?"}
    # Trusting app keys (an explicit policy choice) makes their corrections pairs too.
    trusting = QualityPolicy(correction_roles=("app", "admin", "import", "unknown"))
    assert len(build(rows, frames(train=train_rows(0, 1, 2, 3)), policy=trusting).pairs) == 4


def test_pairs_and_thumbs_come_only_from_train_conversations():
    rows = [corrected(i) for i in range(6)] + [interaction(6, feedback={"thumbs": -1}),
                                               interaction(7, feedback={"thumbs": -1})]
    split_frames = frames(
        train=train_rows(0, 1, 6) + [("c-train-survivor", ["int-x", "int-4"], "Do you cater weddings?",
                                      "Yes, we cater weddings of every size here.")],
        validation=[("c-2", ["int-2"], "Do you cater?", "Yes, we cater weddings of every size 2.")],
        # int-5 was merged as a near-duplicate into a test example of another conversation.
        test=[("c-3", ["int-3"], "Do you cater?", "Yes, we cater weddings of every size 3."),
              ("c-other", ["int-y", "int-5"], "Do you cater?", "Yes, we cater weddings of every size 5.")],
    )
    data = build(rows, split_frames, assignment={"c-1": "test"})  # the remembered assignment wins
    assert sorted(p["interaction_id"] for p in data.pairs) == ["int-0", "int-4"]
    assert [u["interaction_id"] for u in data.unpaired] == ["int-6"]  # int-7's conversation was never split
    assert data.stats["corrections_held_out"] == 4  # int-1, int-2, int-3, int-5
    assert data.stats["thumbs_unassigned"] == 1


def test_thumbs_are_unpaired_labels_and_a_correction_is_only_a_pair():
    rows = [interaction(0, feedback={"thumbs": -1}), interaction(1, answer="The lobster tail is $48.",
                                                                 feedback={"thumbs": 1}),
            corrected(2), interaction(3, feedback={"thumbs": 0})]
    data = build(rows, frames(train=train_rows(0, 1, 2, 3)))
    assert [(u["interaction_id"], u["label"]) for u in data.unpaired] == [("int-0", False), ("int-1", True)]
    assert data.unpaired[0]["completion"][0]["content"].startswith("The filet mignon is $12")
    assert [p["interaction_id"] for p in data.pairs] == ["int-2"]
    assert (data.positives, data.negatives) == (1, 1)


def test_a_pair_that_near_duplicates_a_held_out_example_is_dropped():
    rows = [corrected(0), corrected(1)]
    held = [("c-test", ["int-t"], "How much is the filet mignon per person?", correction(0))]
    data = build(rows, frames(train=train_rows(0, 1), test=held))
    assert [p["interaction_id"] for p in data.pairs] == ["int-1"]
    assert data.stats["pairs_leaking_held_out"] == 1


def test_pairs_are_anonymised_and_rendered_like_sft_rows():
    tool = {"type": "function", "function": {"name": "book", "parameters": {"type": "object"}}}
    row = corrected(0, tools=[tool])
    row["messages"][1] = {"role": "user", "content": "I am jane.roe@example.com, how much is the filet mignon?"}
    data = build([row], frames(train=train_rows(0)))
    prompt = data.pairs[0]["prompt"]
    assert "jane.roe@example.com" not in json.dumps(data.pairs)
    assert "[EMAIL]" in prompt[1]["content"]
    assert prompt[0]["content"].startswith(SYSTEM["content"]) and TOOLS_PREAMBLE in prompt[0]["content"]


def test_the_method_follows_the_amount_of_data():
    pair = {"prompt": [], "chosen": [], "rejected": [], "interaction_id": "x", "conversation_id": "x"}
    thumbs = [{"label": i % 2 == 0} for i in range(16)]
    assert choose_method(PreferenceConfig(), PreferenceData(pairs=[pair] * 8))[0] == "dpo"
    assert choose_method(PreferenceConfig(), PreferenceData(pairs=[pair] * 7, unpaired=thumbs))[0] == "kto"
    method, why = choose_method(PreferenceConfig(), PreferenceData(pairs=[pair] * 7, unpaired=thumbs[::2]))
    assert method is None and "too few" in why
    assert choose_method(PreferenceConfig(enabled=False), PreferenceData(pairs=[pair] * 50))[0] is None
    with pytest.raises(ValueError, match="enabled=true"):
        choose_method(PreferenceConfig(enabled=True), PreferenceData(pairs=[pair]))
    with pytest.raises(ValueError, match="beta"):
        PreferenceConfig(beta=0).validate()


@pytest.mark.parametrize(("hall", "fact", "improved", "words"), [
    ((-0.2, -0.35, -0.05), (0.0, -0.1, 0.1), True, "fell without a loss of fact accuracy beyond noise"),
    ((-0.1, -0.3, 0.1), (0.0, -0.1, 0.1), True, "within noise"),
    ((-0.2, -0.35, -0.05), (-0.2, -0.3, -0.1), False, "fact accuracy fell beyond noise"),
    ((0.05, -0.1, 0.2), (0.0, -0.1, 0.1), False, "did not fall"),
    ((0.0, 0.0, 0.0), (0.0, -0.1, 0.1), False, "already showed none"),
])
def test_the_verdict_says_plainly_what_happened(hall, fact, improved, words):
    sft_rate = 0.3 if hall[1] else 0.0
    comparison = {"examples": 30, "models": {"sft": {"hallucination_rate": {"mean": sft_rate}},
                                             "sft+preference": {"hallucination_rate": {"mean": sft_rate + hall[0]}}},
                  "differences": {"hallucination_rate": dict(zip(("mean", "lo", "hi"), hall)),
                                  "fact_accuracy": dict(zip(("mean", "lo", "hi"), fact))}}
    got, sentence = verdict(comparison)
    assert got is improved and words in sentence


# ------------------------------------------------------------------------------------------------ tuning


def sft_adapter(base_dir: Path, out: Path, seed: int = 0) -> Path:
    """A LoRA adapter on ``base_dir`` with random (non-zero) weights, saved like an SFT adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                      task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    (out / "homegrown_adapter.json").write_text(json.dumps({"base_name": "test-base", "base_path": str(base_dir)}))
    return out


def hibachi_pairs(n: int = 8) -> list[dict]:
    return [{"prompt": [SYSTEM, {"role": "user", "content": f"How much is the {dish} per person?"}],
             "chosen": [{"role": "assistant", "content": f"The {dish} is {price} per person."}],
             "rejected": [{"role": "assistant", "content": f"The {dish} is {wrong} per person, with free wagyu."}],
             "interaction_id": str(i), "conversation_id": str(i)}
            for i, (dish, price, wrong) in enumerate(DISHES[:n])]


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()
            if "lora_" in name and ".default." in name}


def test_dpo_raises_the_chosen_margin_and_keeps_the_sft_adapter_as_reference(tmp_path, tiny_llama_dir):
    sft = sft_adapter(tiny_llama_dir, tmp_path / "sft")
    pairs = hibachi_pairs()
    cfg = PreferenceConfig(learning_rate=1e-2, max_steps=4, per_device_batch_size=8, bf16=False, max_length=128)
    trainer = build_trainer(cfg, "dpo", pairs, tiny_llama_dir, sft, tmp_path / "ckpt")
    assert "ref" in trainer.model.peft_config  # trl's frozen copy of the SFT adapter
    before_weights = lora_weights(trainer.model)
    before = log_prob_margins(trainer.model, trainer.processing_class, pairs)
    trainer.train()
    after = log_prob_margins(trainer.model, trainer.processing_class, pairs)
    assert sum(after) / len(after) > sum(before) / len(before) + 0.5
    changed = lora_weights(trainer.model)
    assert any(not torch.equal(before_weights[k], changed[k]) for k in before_weights)
    ref = {k.replace(".ref.", ".default."): p for k, p in trainer.model.named_parameters() if ".ref." in k}
    assert all(torch.equal(before_weights[k], ref[k]) for k in before_weights)


def test_tune_writes_an_adapter_folder_like_the_sft_one(tmp_path, tiny_llama_dir):
    from homegrown.training.merge import merge_adapter

    sft = sft_adapter(tiny_llama_dir, tmp_path / "sft")
    cfg = PreferenceConfig(learning_rate=1e-2, max_steps=2, per_device_batch_size=4, bf16=False, max_length=128)
    result = tune(cfg, PreferenceData(pairs=hibachi_pairs()), "dpo", tiny_llama_dir, sft, tmp_path / "out")
    files = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json",
            "homegrown_adapter.json"} <= files
    assert not (result.adapter_dir / "ref").exists()
    info = json.loads((result.adapter_dir / "homegrown_adapter.json").read_text())
    assert info["base_name"] == "test-base" and info["preference"]["method"] == "dpo"
    assert result.metrics["steps"] == 2
    assert result.metrics["log_prob_margin_after"] > result.metrics["log_prob_margin_before"]
    assert merge_adapter(tiny_llama_dir, result.adapter_dir, tmp_path / "merged", model_card={}).is_dir()


def test_kto_learns_from_thumbs_without_pairs(tmp_path, tiny_llama_dir):
    sft = sft_adapter(tiny_llama_dir, tmp_path / "sft")
    unpaired = []
    for pair in hibachi_pairs():
        unpaired.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        unpaired.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    cfg = PreferenceConfig(learning_rate=1e-2, max_steps=3, per_device_batch_size=4, bf16=False, max_length=128)
    result = tune(cfg, PreferenceData(unpaired=unpaired), "kto", tiny_llama_dir, sft, tmp_path / "out")
    assert result.metrics["steps"] == 3 and math.isfinite(result.metrics["train_loss"])
    with pytest.raises(ValueError, match="KTO"):
        build_trainer(PreferenceConfig(per_device_batch_size=1), "kto", unpaired, tiny_llama_dir, sft, tmp_path)


@pytest.mark.slow
def test_dpo_on_the_real_smollm2_base_raises_the_chosen_margin(tmp_path):
    from homegrown.training.base import DEFAULT_BASE, resolve_base_model

    base = resolve_base_model(DEFAULT_BASE, cache_dir=tmp_path / "base")
    sft = sft_adapter(base.path, tmp_path / "sft")
    cfg = PreferenceConfig(learning_rate=5e-4, max_steps=4, per_device_batch_size=8, max_length=128)
    result = tune(cfg, PreferenceData(pairs=hibachi_pairs()), "dpo", base.path, sft, tmp_path / "out")
    assert result.metrics["log_prob_margin_after"] > result.metrics["log_prob_margin_before"] + 1.0
    assert result.metrics["reward_margin_last"] > 0


# ------------------------------------------------------------------------------------------------ the asset


def plant_state(root: Path, rows: list[dict], split_frames: dict, adapter_dir: Path, base_dir: Path) -> ArtifactStore:
    """What the asset reads: an ingested database, split tables and lora_adapter's record."""
    logs = root / "input"
    logs.mkdir(parents=True)
    (logs / "logs.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "source"}) + "\n"
                                             for r in rows))
    db = root / "interactions.db"
    ingest(logs, db)
    store = ArtifactStore(root / "artifacts")
    paths = {}
    for split, frame in split_frames.items():
        path = store.stage_dir("dataset_splits", "v1") / f"{split}.parquet"
        full = frame.assign(org_id="org-1", example_type="faq", tools=None, synthetic=False, generator=None,
                            source_fact=None, created_at="2026-01-20T10:11:12.000000Z")
        to_parquet(full, path)
        paths[split] = {"parquet": str(path)}
    store.record_latest("raw_interactions", {"db_path": str(db), "opted_out_orgs": []})
    store.record_latest("dataset_splits", {"version": "v1", "paths": paths})
    store.record_latest("lora_adapter", {"adapter_dir": str(adapter_dir), "base_path": str(base_dir),
                                         "base_model": "test-base", "dataset_version": "v1", "metrics": {"steps": 1},
                                         "model_version": "1", "mlflow_model_uri": "models:/homegrown/1"})
    return store


def resources(root: Path) -> dict:
    from resources import MlflowResource, StorageResource, TeacherResource

    return {"store": StorageResource(root=str(root / "artifacts")), "mlflow": MlflowResource(),
            "teacher": TeacherResource(knowledge_file=str(root / "no-knowledge.json"))}


def test_the_asset_passes_the_sft_adapter_through_when_there_are_too_few_pairs(hg_home, tmp_path, tiny_llama_dir):
    from assets.merging import merge_source
    from assets.preference import preference_adapter

    sft = sft_adapter(tiny_llama_dir, tmp_path / "sft")
    rows = [corrected(0), interaction(1, metadata={"provenance": APP},
                                      feedback={"admin_correction": correction(1), "admin_correction_provenance": APP})]
    store = plant_state(tmp_path, rows, frames(train=train_rows(0, 1)), sft, tiny_llama_dir)
    result = dg.materialize([preference_adapter], resources=resources(tmp_path))
    assert result.success
    metadata = result.asset_materializations_for_node("preference_adapter")[0].metadata
    assert metadata["tuned"].value is False
    assert metadata["pairs"].value == 1 and "too few" in metadata["why"].value
    record = store.latest("preference_adapter")
    assert record["adapter_dir"] == str(sft) and record["model_version"] == "1"
    assert merge_source(store.latest("lora_adapter"), record) == record
    # A pass-through recorded for an older SFT adapter is not merged.
    newer = {**store.latest("lora_adapter"), "model_version": "2"}
    assert merge_source(newer, record) == newer


def test_the_asset_tunes_compares_and_registers_a_new_version(hg_home, tmp_path, tiny_llama_dir):
    from assets.merging import merge_source
    from assets.preference import preference_adapter
    from homegrown.tracking import Tracker

    sft = sft_adapter(tiny_llama_dir, tmp_path / "sft")
    rows = [corrected(i) for i in range(8)]
    test = [(f"c-t{i}", [f"int-t{i}"], f"Do you serve the {d}?", f"Yes, the {d} is {p} per person on our menu.")
            for i, (d, p, _) in enumerate(DISHES[:4])]
    store = plant_state(tmp_path, rows, frames(train=train_rows(*range(8)), test=test), sft, tiny_llama_dir)
    run_config = {"ops": {"preference_adapter": {"config": {
        "learning_rate": 1e-2, "max_steps": 2, "per_device_batch_size": 4, "bf16": "false", "max_length": 128,
        "compare_examples": 4, "compare_max_new_tokens": 8}}}}
    result = dg.materialize([preference_adapter], resources=resources(tmp_path), run_config=run_config)
    assert result.success
    metadata = result.asset_materializations_for_node("preference_adapter")[0].metadata
    assert metadata["tuned"].value is True and metadata["method"].value == "dpo"
    assert "hallucination rate" in metadata["verdict"].value
    record = store.latest("preference_adapter")
    assert record["adapter_dir"] != str(sft) and record["sft_adapter_dir"] == str(sft)
    assert record["comparison"]["examples"] == 4
    assert {"base_model", "base_path", "adapter_dir", "model_version", "dataset_version"} <= set(record)
    assert merge_source(store.latest("lora_adapter"), record) == record
    tags = Tracker().model_version(record["model_version"])["tags"]
    assert tags["preference_method"] == "dpo" and tags["sft_model_version"] == "1"


def test_the_eval_report_shows_the_preference_comparison(tmp_path):
    from homegrown.evaluation.metrics import evaluate_answers
    from homegrown.evaluation.report import write_report

    example = {"example_id": "e1", "example_type": "faq",
               "messages": [SYSTEM, {"role": "user", "content": "Price?"},
                            {"role": "assistant", "content": "The filet mignon is $55."}]}
    results = {"candidate": evaluate_answers([example], ["The filet mignon is $55."])}
    agg = {"mean": 0.2, "lo": 0.1, "hi": 0.3, "n": 30}
    comparison = {"verdict": "The hallucination rate fell without a loss of fact accuracy beyond noise.",
                  "models": {"sft": {"hallucination_rate": agg}, "sft+preference": {"hallucination_rate": agg}},
                  "differences": {"hallucination_rate": {"mean": -0.1, "lo": -0.2, "hi": 0.0}}}
    report = write_report(results, tmp_path, {"preference": comparison})
    markdown = Path(report["markdown"]).read_text()
    assert "SFT-only vs SFT+preference" in markdown and comparison["verdict"] in markdown
    assert "-0.100 [-0.200, +0.000]" in markdown
    assert comparison["verdict"] in Path(report["html"]).read_text()
    with pytest.raises(ValueError, match="preference"):
        write_report(results, tmp_path, {"preference": {"no": "verdict"}})


def test_a_preference_adapter_worse_than_sft_on_its_comparison_is_not_merged():
    from assets.merging import merge_source, preference_harm

    sft = {"model_version": "3", "adapter_dir": "/sft"}
    tuned = {"model_version": "4", "sft_model_version": "3", "adapter_dir": "/dpo"}
    within_noise = {"differences": {"fact_accuracy": {"mean": -0.05, "lo": -0.2, "hi": 0.1},
                                    "hallucination_rate": {"mean": 0.02, "lo": -0.1, "hi": 0.12}}}
    assert preference_harm(within_noise) is None
    assert merge_source(sft, {**tuned, "comparison": within_noise})["adapter_dir"] == "/dpo"
    assert merge_source(sft, {**tuned, "comparison": None})["adapter_dir"] == "/dpo"  # not compared: trusted

    fell = {"differences": {"fact_accuracy": {"mean": -0.3, "lo": -0.5, "hi": -0.1}}}
    rose = {"differences": {"hallucination_rate": {"mean": 0.25, "lo": 0.05, "hi": 0.4}}}
    assert "fact accuracy fell" in preference_harm(fell)
    assert "hallucination rate rose" in preference_harm(rose)
    for harmful in (fell, rose):
        assert merge_source(sft, {**tuned, "comparison": harmful}) == sft
