"""The default recipe: chosen from the train split and the hardware, explicit settings win."""

from __future__ import annotations

import pytest

from homegrown.training.recipe import (
    MAX_EPOCHS,
    TARGET_STEPS,
    DataProfile,
    Hardware,
    choose_recipe,
    estimate_tokens_per_s,
)
from homegrown.training.sft import TrainConfig

CPU = Hardware("cpu", cpus=2, memory_gib=24.0)
GPU = Hardware("cuda", cpus=16, memory_gib=128.0, gpu_name="H200", gpu_memory_gib=139.0, gpus=1)
SMOL = 135_000_000


def profile(rows: int, tokens_per_row: int = 250, p99: int = 600) -> DataProfile:
    return DataProfile(rows=rows, tokens=rows * tokens_per_row, answer_tokens=rows * tokens_per_row // 3,
                       p99_row_tokens=p99, max_row_tokens=p99 + 100, validation_rows=max(1, rows // 8))


def steps(recipe) -> int:
    return recipe.estimate["total_steps"]


@pytest.mark.parametrize("rows", [20, 58, 150, 508, 1200, 5000, 50_000])
def test_every_size_gets_enough_small_steps_without_parroting(rows):
    recipe = choose_recipe(TrainConfig(), profile(rows), CPU, SMOL)
    cfg = recipe.config
    assert cfg.unresolved() == []
    cfg.validate(resolved=True)
    assert 1 <= cfg.num_epochs <= MAX_EPOCHS
    # small data: epochs until ~TARGET_STEPS (or the epoch cap); big data: one epoch is already enough steps
    assert steps(recipe) >= min(TARGET_STEPS, MAX_EPOCHS * rows / cfg.per_device_batch_size) - 1
    assert cfg.per_device_batch_size * cfg.gradient_accumulation <= 4
    assert cfg.target_modules == "all-linear" and cfg.lora_r == 32 and cfg.lora_alpha == 64
    assert cfg.learning_rate == 2e-3
    assert cfg.eval_steps >= 1 and steps(recipe) / cfg.eval_steps <= 8
    assert all(recipe.reasons[name] for name in ("num_epochs", "per_device_batch_size", "learning_rate"))


def test_the_issue_case_fifty_eight_rows_gets_many_more_steps_than_the_old_defaults():
    # the old defaults: 16-row steps, 3 epochs -> 12 optimiser steps on 58 rows
    recipe = choose_recipe(TrainConfig(), profile(58), CPU, SMOL)
    assert recipe.config.per_device_batch_size == 1
    assert steps(recipe) >= 250


def test_large_bases_get_smaller_rank_and_rate_and_gpus_bigger_steps():
    recipe = choose_recipe(TrainConfig(), profile(5000), GPU, 7_200_000_000)
    cfg = recipe.config
    assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate) == (16, 32, 2e-4)
    assert cfg.per_device_batch_size == 16
    assert estimate_tokens_per_s(GPU, 7_200_000_000) > 50 * estimate_tokens_per_s(CPU, 7_200_000_000)


def test_explicit_settings_win_and_say_so():
    cfg = TrainConfig(lora_r=8, learning_rate=5e-4, num_epochs=2.0, target_modules=("q_proj", "v_proj"),
                      per_device_batch_size=2, gradient_accumulation=2)
    recipe = choose_recipe(cfg, profile(508), CPU, SMOL)
    got = recipe.config
    assert (got.lora_r, got.learning_rate, got.num_epochs, got.target_modules) == (8, 5e-4, 2.0, ("q_proj", "v_proj"))
    assert (got.per_device_batch_size, got.gradient_accumulation) == (2, 2)
    assert got.lora_alpha == 16  # 2 x the explicit rank
    for name in ("lora_r", "learning_rate", "num_epochs", "target_modules", "per_device_batch_size"):
        assert recipe.reasons[name] == "set by the run config"
    assert steps(recipe) == 2 * 127


def test_a_time_budget_plans_fewer_epochs_then_fewer_steps():
    free = choose_recipe(TrainConfig(), profile(508), CPU, SMOL)
    epoch_s = free.estimate["epoch_s"]
    assert free.config.num_epochs == 3
    capped = choose_recipe(TrainConfig(time_budget_s=1.6 * epoch_s), profile(508), CPU, SMOL)
    assert capped.config.num_epochs == 1.5
    assert "time budget" in capped.reasons["num_epochs"]
    tight = choose_recipe(TrainConfig(time_budget_s=0.5 * epoch_s), profile(508), CPU, SMOL)
    assert tight.config.num_epochs == 1.0 and 0 < tight.config.max_steps < 127
    # an explicit number of epochs is not second-guessed by the budget (the trainer still stops at it)
    explicit = choose_recipe(TrainConfig(num_epochs=3.0, time_budget_s=0.5 * epoch_s), profile(508), CPU, SMOL)
    assert explicit.config.num_epochs == 3.0


def test_sequence_length_follows_the_data_within_the_models_window():
    assert choose_recipe(TrainConfig(), profile(100, p99=90), CPU, SMOL).config.max_seq_length == 256
    assert choose_recipe(TrainConfig(), profile(100, p99=700), CPU, SMOL).config.max_seq_length == 704
    assert choose_recipe(TrainConfig(), profile(100, p99=9000), CPU, SMOL,
                         model_max_length=2048).config.max_seq_length == 2048


@pytest.mark.parametrize("bad", [{"time_budget_s": 0}, {"time_budget_s": -5.0}, {"lora_r": 0}])
def test_illegal_values_fail_before_anything_loads(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad).validate()


def test_early_stopping_needs_a_validation_split_big_enough_to_judge_by():
    small = choose_recipe(TrainConfig(), profile(43), CPU, SMOL)  # 5 validation rows
    assert small.config.early_stopping_patience == 0 and "too few" in small.reasons["early_stopping_patience"]
    big = choose_recipe(TrainConfig(), profile(508), CPU, SMOL)  # 63 validation rows
    assert big.config.early_stopping_patience == 2
    assert choose_recipe(TrainConfig(early_stopping_patience=0), profile(508), CPU, SMOL).config \
        .early_stopping_patience == 0
