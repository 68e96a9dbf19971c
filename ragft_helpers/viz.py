"""Small plotting helpers shared by the notebooks."""
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
