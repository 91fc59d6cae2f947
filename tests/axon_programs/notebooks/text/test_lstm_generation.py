"""Axon's notebooks/text/lstm_generation.livemd: one- and two-layer character LSTMs
(synthetic lowercase text in place of the downloaded book) and greedy generation."""

import numpy as np
import pytest

import axonc as ax
from tests.axon_programs.helpers import record

SEQUENCE_LENGTH = 20  # the notebook uses 100; shrunk so the unrolled two-layer LSTM compiles fast
GENERATED = 3


def prepare(normalized_book_text):
    characters = sorted(set(normalized_book_text))
    characters_count = len(characters)
    char_to_idx = {c: i for i, c in enumerate(characters)}
    idx_to_char = {i: c for i, c in enumerate(characters)}

    ids = [char_to_idx[c] for c in normalized_book_text]
    chunks = [ids[i : i + SEQUENCE_LENGTH] for i in range(len(ids) - SEQUENCE_LENGTH + 1)][:-1]
    train_data = (np.array(chunks) / characters_count).reshape(-1, SEQUENCE_LENGTH, 1)
    train_results = np.array(ids[SEQUENCE_LENGTH:]).reshape(-1, 1) == np.arange(characters_count)
    return (
        train_data.astype(np.float32),
        train_results.astype(np.uint8),
        characters_count,
        char_to_idx,
        idx_to_char,
    )


def generate_fn(model, params, init_seq, char_to_idx, idx_to_char, characters_count):
    seq = [char_to_idx[c] for c in init_seq.strip().lower()]
    for _ in range(GENERATED):
        window = np.array(seq[-SEQUENCE_LENGTH:]) / characters_count
        window = window.reshape(1, SEQUENCE_LENGTH, 1).astype(np.float32)
        seq = [*seq, int(np.argmax(ax.predict(model, params, window)))]
    return "".join(idx_to_char[i] for i in seq)


def batched(x, n):
    return [x[i : i + n] for i in range(0, len(x), n)]


@pytest.mark.slow
def test_lstm_generation():
    rng = np.random.default_rng(0)
    normalized_book_text = list(
        "".join(rng.choice(list("abcdefgh .\n"), size=SEQUENCE_LENGTH + 32))
    )
    train_data, train_results, characters_count, char_to_idx, idx_to_char = prepare(
        normalized_book_text
    )

    out, _ = ax.input("input_chars", shape=(None, SEQUENCE_LENGTH, 1)).lstm(256)
    model = (
        out.nx(lambda t: t[:, -1]).dropout(rate=0.2).dense(characters_count, activation="softmax")
    )

    batch_size = 16
    losses = []
    params = (
        ax.Loop.trainer(model, "categorical_cross_entropy", ax.optimizers.adam(learning_rate=0.001))
        .handle_event("epoch_completed", record(losses))
        .run(
            list(zip(batched(train_data, batch_size), batched(train_results, batch_size))),
            {},
            epochs=2,
        )
    )
    assert losses[-1] < losses[0]

    init_seq = """
    hag bead. cafe
    fade. bag had hedge
    """
    generated = generate_fn(model, params, init_seq, char_to_idx, idx_to_char, characters_count)
    assert len(generated) == len(init_seq.strip()) + GENERATED
    assert set(generated) <= set(char_to_idx)

    out, _ = ax.input("input_chars", shape=(None, SEQUENCE_LENGTH, 1)).lstm(256)
    out, _ = out.dropout(rate=0.2).lstm(256)
    new_model = (
        out.nx(lambda x: x[:, -1]).dropout(rate=0.2).dense(characters_count, activation="softmax")
    )

    batch_size = 8
    new_params = ax.Loop.trainer(
        new_model, "categorical_cross_entropy", ax.optimizers.adam(learning_rate=0.001)
    ).run(
        list(zip(batched(train_data, batch_size), batched(train_results, batch_size))), {}, epochs=1
    )
    assert set(new_params.data) >= {"lstm_0", "lstm_1", "dense_0"}

    generated = generate_fn(
        new_model, new_params, init_seq, char_to_idx, idx_to_char, characters_count
    )
    assert len(generated) == len(init_seq.strip()) + GENERATED
