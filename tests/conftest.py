import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def hg_home(tmp_path, monkeypatch):
    """A fresh HOMEGROWN_HOME (and DAGSTER_HOME inside it) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOMEGROWN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("HOMEGROWN_INPUT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def make_tiny_llama(folder):
    """A randomly initialised 2-layer Llama with the SmolLM2 tokenizer and chat template (from the embedded GGUF)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from homegrown.training.base import embedded_gguf_path

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(autouse=True)
def _no_answer_cache(monkeypatch):
    """Every eval in the tests generates its answers (tests/test_answer_cache.py turns the cache on): an answer
    read back from an earlier test run would make a check of generation pass on old output."""
    monkeypatch.setenv("HOMEGROWN_ANSWER_CACHE", "0")


@pytest.fixture(autouse=True)
def _code_location_left_as_found():
    """A test may build definitions of its own, never replace the imported code location's: a reload under a
    test's environment (production resources, say) would hand those resources to every later test."""
    import pipelines.definitions

    before = pipelines.definitions.defs
    yield
    after = pipelines.definitions.defs
    if after is not before:
        pipelines.definitions.defs = before  # the later tests get the code location back
        pytest.fail("this test replaced pipelines.definitions.defs (a module reload?): later tests would run on "
                    "its resources; build a dg.Definitions of its own instead")
