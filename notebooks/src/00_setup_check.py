# %% [markdown]
# # 00 · Setup check
#
# Before any language model is trained or any document is indexed, this notebook checks that the
# machine in front of you can run the whole workbook — and tells you exactly what it will use.
#
# **Learning goals**
# - Read the doctor's report: packages, device, memory, disk, and what to fix; estimate how long
#   the workbook takes on this machine.
# - Know which language model and embedding model this workbook resolved, and *where they came
#   from* (the Hugging Face Hub, a local cache, or the bundled offline copies).
# - Understand the three profiles (`smoke`, `laptop`, `full`) and how to switch between them.
# - See an interactive widget work, since later notebooks use them.
#
# > **Offline by design.** Every notebook runs without the Hugging Face Hub. When the hub cannot be
# > reached, the workbook says so in one line and uses the offline copies it installed.

# %% [markdown]
# ## Step 1 — Settings and the hub
# Importing `ragft_helpers` probes the hub once (a few seconds at most) *before* any Hugging Face
# library is imported, and switches those libraries to offline mode when it is unreachable.

# %%
import ragft_helpers
from ragft_helpers import assets, doctor
from ragft_helpers.config import PROFILES, get_settings

settings = get_settings()
print("profile:", settings.profile.name, "—", settings.profile.description)
print("cache folder:", settings.cache_dir)
print("hub:", "reachable" if ragft_helpers.HUB_STATUS.reachable else ragft_helpers.HUB_STATUS.reason)

# %% [markdown]
# ## Step 2 — The doctor
# `ragft doctor` on the command line prints the same report. A row marked `False` in the `ok`
# column comes with a fix.

# %%
checks = doctor.run_checks(settings)
report = doctor.checks_frame(checks)
report

# %%
# Checkpoint: every check passes on a machine that can run the workbook.
problems = report[~report["ok"]]
assert problems.empty, f"Fix these first:\n{problems[['check', 'fix']].to_string()}"

# %% [markdown]
# ### How long the workbook takes on this machine
# The `machine speed` row times a matrix multiplication, the operation that dominates every model
# in this workbook, and compares the rate with that of the machine the workbook's run times were
# measured on (`benchmarks/results/`). Reading a prompt or scoring an answer (inference) runs in
# fp32 and scales with the first ratio; training scales with the second, because it runs in
# bf16 where the CPU computes bf16 natively (AVX512-BF16 or AMX: recent server CPUs and some
# laptops) and in fp32 elsewhere. A profile's total therefore lies between the two estimates.
# Other work on the cores (another kernel training, a video call) lowers the measured rate: for
# a fair estimate, run this step when the machine is otherwise idle.

# %%
speed = report.set_index("check").loc["machine speed"]
print(speed["value"])
if speed["fix"]:
    print("advice:", speed["fix"])

# %%
# Checkpoint: on a CPU, the rate was measured on this machine (a GPU is not compared).
from ragft_helpers.machine import torch_device

measured_here = speed["value"].startswith("fp32 matmul") and "GFLOP/s" in speed["value"]
assert measured_here or torch_device() != "cpu", speed["value"]

# %% [markdown]
# ## Step 3 — The resolved assets, with provenance
# The language model chain is `RAGFT_MODEL` → `gpt2` (cache or hub) → the bundled
# SmolLM2-135M-Instruct, converted once from GGUF into a plain, trainable checkpoint. The first
# conversion takes about half a minute; later loads take a second or two.

# %%
import pandas as pd

language_model = assets.load_causal_lm(settings)
embedding = assets.resolve_embedding_model()
model_parameters = sum(p.numel() for p in language_model.model.parameters())
pd.DataFrame([
    {"asset": "language model", "name": language_model.provenance.name,
     "source": language_model.provenance.source, "location": language_model.provenance.location,
     "parameters (M)": round(model_parameters / 1e6, 1),
     "load time (s)": round(language_model.load_seconds, 1)},
    {"asset": "embedding model", "name": embedding.name, "source": embedding.source,
     "location": embedding.location, "parameters (M)": None, "load time (s)": None},
])

# %% [markdown]
# A model file can load without error and still be useless — random or damaged weights produce
# text too, just nonsense. So the check below *measures* the model: its **perplexity** on a plain
# English sentence, roughly "how many tokens was it hesitating between at each step" (notebook 01
# explains it properly). A model guessing blindly hesitates between its whole vocabulary, tens of
# thousands of tokens; a trained one between a few dozen or hundred.

# %%
import torch
from ragft_helpers import lm

tokenizer = language_model.tokenizer
inputs = tokenizer("The ferry leaves the harbour at", return_tensors="pt")
with torch.no_grad():
    output = language_model.model.generate(**inputs, max_new_tokens=8, do_sample=False,
                                           pad_token_id=tokenizer.eos_token_id)
continuation = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print("continuation:", repr(continuation))
sentence = "The ferry leaves the harbour at seven every morning and returns in the evening."
sentence_ppl = lm.perplexity(language_model.model, tokenizer, sentence, max_length=64,
                             progress=False).perplexity
print(f"perplexity on a plain sentence: {sentence_ppl:.0f}; a blind guess: {len(tokenizer):,}")
# Checkpoints: the weights are a trained language model (far better than a blind guess), and
# they are plain weights that can be fine-tuned (not a quantized copy).
assert continuation.strip(), "the model generated nothing"
assert sentence_ppl < len(tokenizer) / 100, "the weights look untrained or damaged"
assert getattr(language_model.model, "hf_quantizer", None) is None, "the model must be trainable"

# %% [markdown]
# ## Step 4 — Profiles
# Profiles change *budgets* — training steps, block size, evaluation tokens, number of questions —
# never the code that runs. Choose one before starting Jupyter:
#
# ```bash
# RAGFT_PROFILE=smoke make lab     # a quick look, also what CI runs
# make lab                         # laptop, the default
# RAGFT_PROFILE=full make lab      # on a GPU
# ```
#
# or in the first cell of a notebook, before `import ragft_helpers`:
# `%env RAGFT_PROFILE=smoke`.

# %%
profiles = pd.DataFrame([vars(p) for p in PROFILES.values()]).set_index("name")
profiles.T

# %% [markdown]
# ## Step 5 — Widgets
# Later notebooks use `ipywidgets` for a sampling playground and a chat box. Move the slider: the
# label below it should follow. The handler is an ordinary function, which is how every widget in
# this workbook is tested without a browser.

# %%
import ipywidgets as widgets
from IPython.display import display


def describe_temperature(value: float) -> str:
    return "greedy-like" if value < 0.3 else "balanced" if value < 1.2 else "adventurous"


slider = widgets.FloatSlider(value=0.7, min=0.0, max=2.0, step=0.1, description="temperature")
label = widgets.Label(describe_temperature(slider.value))
slider.observe(lambda change: setattr(label, "value", describe_temperature(change["new"])), names="value")
display(widgets.VBox([slider, label]))

# %%
# Checkpoint: the widget is wired — changing its value updates the label.
slider.value = 1.5
assert label.value == "adventurous"
slider.value = 0.7

# %% [markdown]
# ## Summary
# - The doctor checks packages, device, memory, disk and assets, and names a fix for each problem.
# - The run times in this workbook were measured on one machine; the machine speed row scales them
#   to yours from a measured matmul rate, inference and training separately.
# - Every model the workbook uses is resolved through a chain and reported with its source, so you
#   always know whether you are looking at GPT-2 or at the bundled offline model.
# - Profiles trade runtime for budget; the code path is the same for all of them.
#
# ## Exercises
# 1. Run `ragft doctor` in a terminal. It prints the report of step 2 and exits with status 0 when
#    every check passes. Which rows would change on a machine with a GPU? (Expect the `torch
#    build` and `device` rows to name CUDA instead of the CPU.)
# 2. In a new cell, run `get_settings({"RAGFT_PROFILE": "turbo"})`. Expect a `ConfigError` that
#    names the three profiles you can use instead.
# 3. Restart the kernel, run `%env HF_ENDPOINT=http://127.0.0.1:9` in a cell *before* step 1,
#    then run step 1 and time it. Expect the hub line to say `http://127.0.0.1:9 unreachable`
#    within a fraction of a second (nothing listens on port 9), and the models to come from the
#    same place as before: a cached or bundled copy needs no hub. Remove the line and restart the
#    kernel afterwards.
# 4. Compare the `smoke` and `laptop` columns of the profile table. Which budget would you raise
#    first to make fine-tuning results more reliable, and what would it cost in runtime?
#
# ## Questionnaire
# 1. In what order does the workbook look for a language model, and where does the copy it used
#    on this machine come from?
# 2. Why does importing `ragft_helpers` probe the hub *before* any Hugging Face library is
#    imported?
# 3. What does a profile change, and what does it never change?
# 4. A model can load without an error and still be broken. What did step 3 measure to rule that
#    out, and what value would a blind guess give?
# 5. The bundled model ships as a quantized GGUF file. Why does the workbook convert it into a
#    plain checkpoint, and which checkpoint of step 3 would fail without that conversion?
# 6. The machine speed row gives two slow-downs, one for inference and one for training. Why can
#    training be slowed down more than inference on a CPU without native bf16?
