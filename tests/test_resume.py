"""An interrupted fine-tuning run resumes from its last checkpoint and ends where an uninterrupted
run ends: same global step, same losses, same weights (tiny GPT-2, no network)."""

import pytest
from transformers import TrainerCallback

from ragft_helpers import lm, training
from tests.tiny_models import (TINY_TEXT, one_torch_thread, tiny_gpt2, tiny_tokenizer,  # noqa: F401
                               tiny_training_settings)  # noqa: F401 (autouse fixture)

MAX_STEPS = 8  # N
SAVE_EVERY = 2
INTERRUPT_AT = 5  # the run dies during step 5: checkpoint-4 is the last one on disk
RESUMED_FROM = 4  # k
# On the CPU the resumed run replays bit for bit (weights equal, max difference 0.0): Trainer restores
# the optimiser, scheduler and RNG states (dropout) and skips the batches already seen. The tolerance
# only absorbs float noise; the test checks it is >100x below what the last two steps change.
TOLERANCE = 1e-6


class Interrupted(Exception):
    """Stands in for Ctrl-C or a preemption in the middle of training."""


class InterruptAfterStep(TrainerCallback):
    """Raise once ``step`` optimiser steps are done, before that step's checkpoint would be written."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"interrupted at step {state.global_step}")


class CountSteps(TrainerCallback):
    """Record the optimiser steps this ``train()`` call actually ran."""

    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)



@pytest.fixture(scope="module")
def tokenizer():
    return lm.ensure_pad_token(tiny_tokenizer())


@pytest.fixture(scope="module")
def lm_datasets(tokenizer):
    """Sentences of the tiny text in a seeded shuffled order: 5 batches of 8 blocks per epoch, so
    8 steps cross an epoch boundary and the resume lands mid-epoch (batches must be skipped)."""
    import random

    from datasets import Dataset, DatasetDict

    sentences = [s.strip() + " ." for s in TINY_TEXT.split(" . ") if s.strip(" .")]
    rng = random.Random(0)
    rows = [" ".join(rng.sample(sentences, len(sentences))) for _ in range(20)]
    raw = DatasetDict({"train": Dataset.from_dict({"text": rows}),
                       "validation": Dataset.from_dict({"text": rows[:6]})})
    grouped = training.tokenize_and_group(raw, tokenizer, block_size=16, rows_are_documents=True)
    grouped["train"] = grouped["train"].select(range(40))
    return grouped


@pytest.fixture
def settings(tmp_path):
    return tiny_training_settings(tmp_path / "cache")


class WeightsAt(TrainerCallback):
    """Keeps a copy of the model's weights after ``step``."""

    def __init__(self, step: int):
        self.step, self.weights = step, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            self.weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def make_trainer(tokenizer, lm_datasets, settings, run_dir, *, seed=0, callbacks=()):
    trainer = training.build_trainer(tiny_gpt2(tokenizer, seed=seed), tokenizer, lm_datasets, settings,
                                     run_dir, max_steps=MAX_STEPS, eval_steps=SAVE_EVERY,
                                     save_steps=SAVE_EVERY, logging_steps=1, disable_tqdm=True)
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer


def logged(trainer, key: str) -> dict[int, float]:
    return {entry["step"]: entry[key] for entry in trainer.state.log_history if key in entry}


def max_weight_difference(a, b) -> float:
    """The largest absolute difference between two models' weights (models or state dicts)."""
    a_weights, b_weights = (x.state_dict() if hasattr(x, "state_dict") else x for x in (a, b))
    return max((weights - b_weights[name]).abs().max().item() for name, weights in a_weights.items())


def test_an_interrupted_run_resumes_and_matches_an_uninterrupted_one(tokenizer, lm_datasets, settings,
                                                                      tmp_path, capsys):
    # (a) the reference: N steps in one go
    earlier = WeightsAt(MAX_STEPS - SAVE_EVERY)  # the last assert compares with these
    reference = make_trainer(tokenizer, lm_datasets, settings, tmp_path / "reference",
                             callbacks=[earlier])
    reference_output = training.train(reference)
    assert reference_output.global_step == MAX_STEPS

    # (b) the same run, killed during step k + 1, after checkpoint-k was written
    run_dir = tmp_path / "interrupted"
    interrupted = make_trainer(tokenizer, lm_datasets, settings, run_dir,
                               callbacks=[InterruptAfterStep(INTERRUPT_AT)])
    with pytest.raises(Interrupted):
        training.train(interrupted)
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == [f"checkpoint-{RESUMED_FROM}"]
    assert (run_dir / f"checkpoint-{RESUMED_FROM}" / "optimizer.pt").is_file()  # unfinished: resumable
    del interrupted  # nothing of it survives but the folder

    # (c) a new process would build everything afresh: a differently initialised model
    counter = CountSteps()
    resumed = make_trainer(tokenizer, lm_datasets, settings, run_dir, seed=1, callbacks=[counter])
    resumed_output = training.train(resumed, resume=True)
    assert f"Resuming from {run_dir / f'checkpoint-{RESUMED_FROM}'}" in capsys.readouterr().out

    assert resumed_output.global_step == resumed.state.global_step == MAX_STEPS
    assert counter.steps == list(range(RESUMED_FROM + 1, MAX_STEPS + 1))  # N - k steps, not from 0

    # Per-step train losses and the evaluations after the resume match the reference.
    reference_losses, resumed_losses = logged(reference, "loss"), logged(resumed, "loss")
    assert set(resumed_losses) == set(reference_losses) == set(range(1, MAX_STEPS + 1))
    for step in range(1, MAX_STEPS + 1):
        assert resumed_losses[step] == pytest.approx(reference_losses[step], abs=TOLERANCE), step
    reference_evals, resumed_evals = logged(reference, "eval_loss"), logged(resumed, "eval_loss")
    assert list(resumed_evals) == list(reference_evals) == list(range(0, MAX_STEPS + 1, SAVE_EVERY))
    for step, loss in reference_evals.items():
        assert resumed_evals[step] == pytest.approx(loss, abs=TOLERANCE), step
    # training_loss of the resumed call is the mean over the steps it ran
    after_resume = [reference_losses[s] for s in range(RESUMED_FROM + 1, MAX_STEPS + 1)]
    assert resumed_output.training_loss == pytest.approx(sum(after_resume) / len(after_resume),
                                                         abs=TOLERANCE)

    # Same weights; skipping the last SAVE_EVERY steps or starting over would be far off.
    assert max_weight_difference(resumed.model, reference.model) <= TOLERANCE
    assert max_weight_difference(earlier.weights, reference.model) > 100 * TOLERANCE
    assert abs(resumed_evals[MAX_STEPS] - reference_evals[MAX_STEPS - SAVE_EVERY]) > 100 * TOLERANCE


def test_resume_false_starts_over(tokenizer, lm_datasets, settings, tmp_path):
    """``resume=False`` ignores the checkpoints in the folder and trains all N steps."""
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        training.train(make_trainer(tokenizer, lm_datasets, settings, run_dir,
                                    callbacks=[InterruptAfterStep(3)]))
    counter = CountSteps()
    fresh = make_trainer(tokenizer, lm_datasets, settings, run_dir, callbacks=[counter])
    assert training.train(fresh, resume=False).global_step == MAX_STEPS
    assert counter.steps == list(range(1, MAX_STEPS + 1))
