"""Axon's notebooks/vision/horses_or_humans.livemd: the horses-or-humans CNN trained with
categorical cross-entropy, with and without gradient centralization (synthetic 300x300
RGBA images in place of the downloaded zip)."""

import numpy as np

import axonc as ax

BATCH_SIZE = 2


def data_stream(files, batch_size, rng):
    order = rng.permutation(len(files))
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    while True:
        for batch in batches:
            images, labels = zip(*(parse_file(files[i]) for i in batch))
            yield augment(np.stack(images)), np.stack(labels)


def parse_file(file):
    filename, image = file
    if filename.startswith("horses/"):
        label = np.array([1, 0], np.uint8)
    else:
        label = np.array([0, 1], np.uint8)
    return image, label


def augment(images):
    images = (images / 255.0).astype(np.float32)
    u = np.random.default_rng(1987).uniform()
    if u < 0.25:
        return images
    if u < 0.5:
        return images[:, :, ::-1].copy()
    if u < 0.75:
        return images[:, :, :, ::-1].copy()
    return images[:, :, ::-1, ::-1].copy()


def build():
    return (
        ax.input("input", shape=(None, 300, 300, 4))
        .conv(16, kernel_size=(3, 3), activation="relu")
        .max_pool(kernel_size=(2, 2))
        .conv(32, kernel_size=(3, 3), activation="relu")
        .spatial_dropout(rate=0.5)
        .max_pool(kernel_size=(2, 2))
        .conv(64, kernel_size=(3, 3), activation="relu")
        .spatial_dropout(rate=0.5)
        .max_pool(kernel_size=(2, 2))
        .conv(64, kernel_size=(3, 3), activation="relu")
        .max_pool(kernel_size=(2, 2))
        .conv(64, kernel_size=(3, 3), activation="relu")
        .max_pool(kernel_size=(2, 2))
        .flatten()
        .dropout(rate=0.5)
        .dense(512, activation="relu")
        .dense(2, activation="softmax")
    )


def synthetic_files(rng):
    kinds = ["horses/horse01.png", "humans/human01.png", "horses/horse05.png", "humans/human05.png"]
    return [(name, rng.integers(0, 256, size=(300, 300, 4), dtype=np.uint8)) for name in kinds]


def check_prediction(model, params, files):
    _name, binary = files[0]
    input = (binary[None] / 255.0).astype(np.float32)
    out = ax.predict(model, params, input)
    assert out.shape == (1, 2)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-5)


def test_train():
    rng = np.random.default_rng(0)
    files = synthetic_files(rng)
    batches_per_epoch = len(files) // BATCH_SIZE
    model = build()

    data = data_stream(files, BATCH_SIZE, rng)
    optimizer = ax.optimizers.adam(learning_rate=1.0e-4)
    params = (
        ax.Loop.trainer(model, "categorical_cross_entropy", optimizer, log=1)
        .metric("accuracy")
        .run(data, {}, epochs=1, iterations=batches_per_epoch)
    )
    check_prediction(model, params, files)
