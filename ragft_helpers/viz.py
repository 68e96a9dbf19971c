"""Every plot of the workbook: loss curves, next-token bars, accuracy bars, the embedding map."""
from __future__ import annotations

from typing import Sequence


def pca_2d(vectors):
    """Project row vectors onto their first two principal components (numpy SVD)."""
    import numpy as np

    matrix = np.asarray(vectors, dtype=float)
    centred = matrix - matrix.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_embedding_map(chunk_vectors, chunk_labels: Sequence[str], query_vectors,
                       query_texts: Sequence[str], ax=None, top_labels: int = 8):
    """Chunks (coloured by source, the ``top_labels`` largest sources) and queries (stars) in 2-D."""
    from collections import Counter

    import matplotlib.pyplot as plt
    import numpy as np

    points = pca_2d(np.vstack([chunk_vectors, query_vectors]))
    chunk_points, query_points = points[:len(chunk_vectors)], points[len(chunk_vectors):]
    ax = ax or plt.subplots(figsize=(9, 7))[1]
    common = [label for label, _ in Counter(chunk_labels).most_common(top_labels)]
    labels = np.array(chunk_labels)
    other = ~np.isin(labels, common)
    ax.scatter(*chunk_points[other].T, s=8, c="lightgrey", label="other sources")
    for label in common:
        ax.scatter(*chunk_points[labels == label].T, s=12, label=label)
    ax.scatter(*query_points.T, marker="*", s=220, c="black", label="questions")
    for (x, y), text in zip(query_points, query_texts):
        ax.annotate(text[:40], (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.legend(fontsize=7, loc="best")
    return ax


def plot_loss_curve(history, ax=None):
    """Train and validation loss against the optimiser step; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    train_rows = history.dropna(subset=["train_loss"])
    eval_rows = history.dropna(subset=["eval_loss"])
    ax.plot(train_rows["step"], train_rows["train_loss"], label="train loss")
    ax.plot(eval_rows["step"], eval_rows["eval_loss"], marker="o", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (mean token NLL, nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_next_token_distribution(distribution, ax=None, title: str | None = None):
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    labels = [repr(t) for t in distribution["token"]]
    ax.barh(labels[::-1], distribution["probability"][::-1])
    ax.set_xlabel("probability of being the next token")
    if title:
        ax.set_title(title)
    return ax


def plot_accuracy(table, systems: Sequence[str], ax=None, *,
                  ylabel: str = "multiple-choice accuracy", chance: float | None = 0.25):
    """Grouped bars from :func:`accuracy_table` (one group per metric, one bar per system) with
    the bootstrap intervals as whiskers, and a dotted line at ``chance`` (None: no line);
    returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    metrics = list(dict.fromkeys(table["metric"]))
    width = 0.8 / len(systems)
    for n, system in enumerate(systems):
        rows = table[table["system"] == system].set_index("metric").reindex(metrics)
        x = np.arange(len(metrics)) + (n - (len(systems) - 1) / 2) * width
        errors = np.vstack([rows["value"] - rows["low"], rows["high"] - rows["value"]])
        ax.bar(x, rows["value"], width, yerr=np.nan_to_num(errors), capsize=2, label=system)
    ax.set_xticks(np.arange(len(metrics)), [m.removeprefix("mc_") for m in metrics])
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance (4 options)")
    ax.legend(fontsize=8, ncol=4)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_confusion_matrix(matrix, ax=None, title: str | None = None):
    """A confusion matrix from :func:`ragft_helpers.tasks.confusion_matrix` (true label rows,
    predicted label columns) as a heat map with the counts written in; returns the Axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(6, 5))[1]
    values = matrix.to_numpy()
    ax.imshow(values, cmap="Blues")
    names = [str(label).replace("_", " ") for label in matrix.columns]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), [str(l).replace("_", " ") for l in matrix.index], fontsize=8)
    top = values.max() or 1
    for (row, column), count in np.ndenumerate(values):
        if count:
            ax.text(column, row, int(count), ha="center", va="center", fontsize=7,
                    color="white" if count > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_learning_curve(curve, crossover: dict | None = None, ax=None):
    """Macro-F1 against labelled examples per label, one line per system with its bootstrap
    interval as a band (from :func:`ragft_helpers.tasks.learning_curve`); the crossover, when
    given, is marked. Returns the Axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for system, rows in curve.groupby("system", sort=False):
        rows = rows.sort_values("per_label")
        line, = ax.plot(rows["per_label"], rows["macro_f1"], marker="o", label=system)
        if {"low", "high"} <= set(rows.columns):
            ax.fill_between(rows["per_label"], rows["low"], rows["high"], color=line.get_color(),
                            alpha=0.12)
    if crossover and crossover.get("per_label") is not None:
        ax.axvline(crossover["per_label"], color="grey", linestyle="--", linewidth=1,
                   label=f"fine-tuning ahead from {crossover['per_label']} per label")
    ax.set_xscale("log", base=2)
    sizes = sorted(curve["per_label"].unique())
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("labelled examples per intent")
    ax.set_ylabel("macro-F1 on test messages")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_task_scores(table, metrics: Sequence[str] = ("macro_f1", "accuracy"), ax=None):
    """Grouped bars of each system's scores (rows of :func:`ragft_helpers.tasks.results_table`)
    with their bootstrap intervals as whiskers; returns the Axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(10, 4))[1]
    systems = list(table.index)
    width = 0.8 / len(systems)
    for n, system in enumerate(systems):
        row = table.loc[system]
        values = np.array([row[m] for m in metrics])
        errors = np.array([[row[m] - row[f"{m}_low"] for m in metrics],
                           [row[f"{m}_high"] - row[m] for m in metrics]])
        x = np.arange(len(metrics)) + (n - (len(systems) - 1) / 2) * width
        ax.bar(x, values, width, yerr=np.nan_to_num(errors), capsize=2, label=system)
    ax.set_xticks(np.arange(len(metrics)), [m.replace("_", "-").replace("macro-f1", "macro-F1")
                                            for m in metrics])
    ax.set_ylabel("score on the test messages")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    return ax
