"""Axon's examples/generative/text_generator.exs: a character-level LSTM (synthetic
lowercase text in place of the downloaded book), then greedy generation."""

import numpy as np
import pytest

import axonc as ax
from tests.axon_programs.helpers import record

SEQUENCE_LENGTH = 100
BATCH_SIZE = 16
GENERATED = 5


def build_model(characters_count):
    out, _ = ax.input("input_chars", shape=(None, SEQUENCE_LENGTH, 1)).lstm(256)
    return (
        out.nx(lambda t: t[:, -1]).dropout(rate=0.2).dense(characters_count, activation="softmax")
    )


def generate(model, params, init_seq, char_to_idx, idx_to_char, characters_count):
    seq = [char_to_idx[c] for c in init_seq.lower()]
    for _ in range(GENERATED):
        window = np.array(seq[-SEQUENCE_LENGTH:]) / characters_count
        window = window.reshape(1, SEQUENCE_LENGTH, 1).astype(np.float32)
        char = int(np.argmax(ax.predict(model, params, window)))
        seq = [*seq, char]
    return [idx_to_char[i] for i in seq]


def transform_text(text, char_to_idx, characters_count):
    ids = [char_to_idx[c] for c in text]
    chunks = [ids[i : i + SEQUENCE_LENGTH] for i in range(len(ids) - SEQUENCE_LENGTH + 1)][:-1]
    data = (np.array(chunks) / characters_count).reshape(-1, SEQUENCE_LENGTH, 1)
    data = data.astype(np.float32)
    labels = np.array(ids[SEQUENCE_LENGTH:]).reshape(-1, 1) == np.arange(characters_count)
    labels = labels.astype(np.uint8)
    batches = range(0, len(data), BATCH_SIZE)
    return [data[i : i + BATCH_SIZE] for i in batches], [
        labels[i : i + BATCH_SIZE] for i in batches
    ]


@pytest.mark.slow
def test_text_generator():
    rng = np.random.default_rng(0)
    alphabet = list("abcdefgh .\n")
    normalized_book_text = list("".join(rng.choice(alphabet, size=SEQUENCE_LENGTH + 32)))

    characters = sorted(set(normalized_book_text))
    characters_count = len(characters)
    char_to_idx = {c: i for i, c in enumerate(characters)}
    idx_to_char = {i: c for i, c in enumerate(characters)}

    model = build_model(characters_count)

    train_data, train_labels = transform_text(normalized_book_text, char_to_idx, characters_count)
    assert len(train_data) == 2

    losses = []
    params = (
        ax.Loop.trainer(model, "categorical_cross_entropy", ax.optimizers.adam(learning_rate=0.001))
        .handle_event("epoch_completed", record(losses))
        .run(list(zip(train_data, train_labels)), {}, epochs=3)
    )

    init_sequence = "".join(normalized_book_text[:SEQUENCE_LENGTH])
    generated = generate(model, params, init_sequence, char_to_idx, idx_to_char, characters_count)

    assert len(generated) == SEQUENCE_LENGTH + GENERATED
    assert set(generated) <= set(characters)
    assert losses[-1] < losses[0]
