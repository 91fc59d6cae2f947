"""Axon's examples/vision/resnet50.exs: ResNet-50 built from conv and identity blocks.

The program predates Axon's channels-last convolutions (it reads the channel count as
`elem(shape, 1)` of a channels-first `{nil, 3, 224, 224}`); under Axon 0.8.1's
channels-last layers it is the same network with the channels last, so the input is
`(None, 224, 224, 3)` and the channel count `shape[-1]`."""

import numpy as np

import axonc as ax

TEMPLATE = ax.template((1, 224, 224, 3), "f32")


def conv_block(x, kernel_size, filters, strides=(2, 2)):
    f1, f2, f3 = filters
    shortcut = x.conv(f3, kernel_size=(1, 1), strides=list(strides)).batch_norm()

    main = (
        x.conv(f1, kernel_size=(1, 1), strides=list(strides))
        .batch_norm()
        .relu()
        .conv(f2, kernel_size=kernel_size, padding="same")
        .batch_norm()
        .relu()
        .conv(f3, kernel_size=(1, 1))
        .batch_norm()
    )

    return shortcut.add(main).relu()


def identity_block(x, kernel_size, filters):
    f1, f2 = filters
    shape = ax.get_output_shape(x, TEMPLATE)
    return (
        x.conv(f1, kernel_size=(1, 1))
        .batch_norm()
        .relu()
        .conv(f2, kernel_size=kernel_size, padding="same")
        .batch_norm()
        .relu()
        .conv(shape[-1], kernel_size=(1, 1))
        .batch_norm()
        .add(x)
        .relu()
    )


def build_model(input_shape):
    x = ax.input("input", shape=input_shape)

    stage1 = (
        x.conv(64, kernel_size=(7, 7), strides=[2, 2], padding=[(3, 3), (3, 3)])
        .batch_norm()
        .relu()
        .max_pool(kernel_size=(3, 3), strides=[2, 2], padding=[(1, 1), (1, 1)])
    )

    stage2 = conv_block(stage1, (3, 3), [64, 64, 256], [1, 1])
    stage2 = identity_block(stage2, (3, 3), [64, 64])
    stage2 = identity_block(stage2, (3, 3), [64, 64])

    stage3 = conv_block(stage2, (3, 3), [128, 128, 512])
    for _ in range(3):
        stage3 = identity_block(stage3, (3, 3), [128, 128])

    stage4 = conv_block(stage3, (3, 3), [256, 256, 1024])
    for _ in range(5):
        stage4 = identity_block(stage4, (3, 3), [256, 256])

    stage5 = conv_block(stage4, (3, 3), [512, 512, 2048])
    stage5 = identity_block(stage5, (3, 3), [512, 512])
    stage5 = identity_block(stage5, (3, 3), [512, 512])
    stage5 = stage5.avg_pool(kernel_size=(7, 7)).flatten().dense(1000)

    return ax.softmax(stage5)


def test_resnet50():
    model = build_model((None, 224, 224, 3))

    assert ax.get_output_shape(model, TEMPLATE) == (1, 1000)
    specs = ax.trace_init(model, TEMPLATE)
    total = sum(int(np.prod(spec.shape)) for spec in specs.values())
    # Keras's ResNet50 (the same network: biased convolutions, batch norm with running
    # statistics) reports 25,636,712 parameters in all.
    assert total == 25_636_712
    counts = ax.get_op_counts(model)
    assert counts["conv"] == 53 and counts["batch_norm"] == 53 and counts["add"] == 16
