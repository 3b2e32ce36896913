"""A brute-force weighted kNN vote, the reference the kNN tests compare the package against."""

import numpy as np


def brute_force_scores(train, train_labels, query, num_classes, k, temperature):
    """Explicit-loop float64 reference of the weighted kNN vote: each of the k most
    cosine-similar training samples votes exp(similarity / temperature) for its class."""
    train = np.asarray(train, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    train_labels = np.asarray(train_labels)
    k = min(k, len(train))
    scores = np.zeros((len(query), num_classes))
    for q, query_vector in enumerate(query):
        similarities = []
        for train_vector in train:
            cosine = query_vector @ train_vector
            cosine /= np.linalg.norm(query_vector) * np.linalg.norm(train_vector)
            similarities.append(cosine)
        order = np.argsort(-np.array(similarities), kind="stable")[:k]
        for neighbour in order:
            scores[q, train_labels[neighbour]] += np.exp(similarities[neighbour] / temperature)
    return scores


def brute_force_accuracy(train, train_labels, query, query_labels, num_classes, k, temperature):
    """Top-1 of :func:`brute_force_scores`; a tie goes to the lowest class (``np.argmax``)."""
    scores = brute_force_scores(train, train_labels, query, num_classes, k, temperature)
    return float(np.mean(scores.argmax(axis=1) == np.asarray(query_labels)))
