"""The eval's answer cache: a model file answers a request once; a changed file, adapter or request is a miss."""

import shutil

import pytest

from homegrown.evaluation import answer_cache
from homegrown.evaluation.runner import Answer, _answer_batched
from homegrown.gateway.backends import find_base_gguf

SYSTEM = {"role": "system", "content": "You are the assistant of My Hibachi, a hibachi catering company."}
REQUESTS = [([SYSTEM, {"role": "user", "content": "How much per adult?"}], 12, None, None),
            ([SYSTEM, {"role": "user", "content": "Do you serve wagyu?"}], 8, None, None)]


@pytest.fixture(autouse=True)
def cache_on(monkeypatch):
    """conftest turns the cache off for every other test; these are about it."""
    monkeypatch.setenv("HOMEGROWN_ANSWER_CACHE", "1")


class Counting:
    """The real batched generation, counting the requests that reach the model."""

    def __init__(self):
        self.asked: list[tuple] = []

    def __call__(self, gguf, lora):
        def generate(todo):
            from homegrown.evaluation.batched import BatchedGGUF, Request

            self.asked += todo
            model = BatchedGGUF(gguf, lora=lora)
            try:
                return model.answer([Request(*r) for r in todo])
            finally:
                model.close()
        return generate


def test_a_model_answers_a_request_once(hg_home, tmp_path, monkeypatch):
    gguf = find_base_gguf()
    counting = Counting()
    first = answer_cache.cached_answers(gguf, None, REQUESTS, counting(gguf, None))
    assert len(counting.asked) == 2 and all(a.text for a in first)
    again = answer_cache.cached_answers(gguf, None, REQUESTS + REQUESTS[:1], counting(gguf, None))
    assert len(counting.asked) == 2, "the cached requests reached the model again"
    assert [a.text for a in again] == [a.text for a in first] + [first[0].text]
    # a cached answer carries no timing: this run's latency figures come from what it generated
    assert first[0].latency_s is not None and again[0].latency_s is None and again[0].completion_tokens is None

    # Another budget is another request; a copy of the file is the same model (keyed by its content).
    longer = [(REQUESTS[0][0], 16, None, None)]
    answer_cache.cached_answers(gguf, None, longer, counting(gguf, None))
    assert len(counting.asked) == 3
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(gguf, copy)
    answer_cache.cached_answers(copy, None, REQUESTS, counting(copy, None))
    assert len(counting.asked) == 3
    assert answer_cache.cache_path().is_file() and answer_cache.cache_path().is_relative_to(hg_home)
    assert answer_cache.cache_path().stat().st_mode & 0o777 == 0o600

    # Code that shapes answers is part of the key: another engine answers again.
    monkeypatch.setattr(answer_cache, "ENGINE_MODULES", (*answer_cache.ENGINE_MODULES, "json"))
    answer_cache.engine_digest.cache_clear()
    try:
        answer_cache.cached_answers(gguf, None, REQUESTS, counting(gguf, None))
    finally:
        answer_cache.engine_digest.cache_clear()
    assert len(counting.asked) == 5


def test_another_file_or_a_turned_off_cache_generates(hg_home, tmp_path, monkeypatch):
    gguf = find_base_gguf()
    calls = []

    def fake(todo):  # stands in for a model whose answers differ: only what reaches it matters here
        calls.append(len(todo))
        return [Answer(text=f"answer {len(calls)}") for _ in todo]

    answer_cache.cached_answers(gguf, None, REQUESTS, fake)
    other = tmp_path / "other.gguf"
    other.write_bytes(gguf.read_bytes()[:-1] + b"\0")  # one byte changed: another model
    answer_cache.cached_answers(other, None, REQUESTS, fake)
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"lora")
    answer_cache.cached_answers(gguf, adapter, REQUESTS, fake)
    assert calls == [2, 2, 2]
    monkeypatch.setenv("HOMEGROWN_ANSWER_CACHE", "0")
    assert [a.text for a in answer_cache.cached_answers(gguf, None, REQUESTS, fake)] == ["answer 4"] * 2


@pytest.mark.parametrize("turned_off", [False, True])
def test_the_eval_path_reads_the_cache(hg_home, monkeypatch, turned_off):
    """``run_model``'s batched path goes through the cache: a planted answer comes back unless it is off."""
    if turned_off:
        monkeypatch.setenv("HOMEGROWN_ANSWER_CACHE", "off")
    gguf = find_base_gguf()
    planted = Answer(text="PLANTED", latency_s=0.5, completion_tokens=3)
    with answer_cache.AnswerCache() as cache:
        cache.put(answer_cache.model_key(gguf, None), {answer_cache.request_key(REQUESTS[1]): planted})
    texts = [a.text for a in _answer_batched(gguf, REQUESTS)]
    assert (texts[1] == "PLANTED") is not turned_off
    assert texts[0] and texts[0] != "PLANTED"


def test_an_unusable_cache_generates_and_forget_deletes_it(hg_home, monkeypatch, tmp_path):
    from homegrown.data.forget import forget

    gguf = find_base_gguf()
    answer_cache.cache_path().parent.mkdir(parents=True)
    answer_cache.cache_path().write_bytes(b"not a database" * 100)
    answers = answer_cache.cached_answers(gguf, None, REQUESTS, lambda todo: [Answer(text="fresh") for _ in todo])
    assert [a.text for a in answers] == ["fresh", "fresh"]  # logged, generated, nothing lost
    answer_cache.cache_path().unlink()
    answer_cache.cached_answers(gguf, None, REQUESTS, lambda todo: [Answer(text="kept") for _ in todo])
    assert answer_cache.cache_path().is_file()
    entry = forget(org_id="org-1", log_db_url=None, state_db=None, forget_log=tmp_path / "forget.jsonl")
    assert entry["eval_answer_cache_deleted"] is True and not answer_cache.cache_path().exists()
