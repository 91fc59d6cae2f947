"""choose_providers: TensorRT > CUDA > CPU by default; requested providers must be available."""

import pytest

from axonrt import ProviderError, choose_providers

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (CPU_ONLY, ["CPUExecutionProvider"]),
        (
            ["CPUExecutionProvider", "CUDAExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (list(reversed(GPU)), GPU),
        (
            ["CPUExecutionProvider", "TensorrtExecutionProvider"],
            ["TensorrtExecutionProvider", "CPUExecutionProvider"],
        ),
    ],
)
def test_default_prefers_tensorrt_then_cuda_then_cpu(available, expected):
    assert choose_providers(available) == expected


def test_requested_providers_keep_their_order_and_accept_aliases():
    assert choose_providers(GPU, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(GPU, ["cuda", "CPU"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(GPU, ["trt", "tensorrt"]) == ["TensorrtExecutionProvider"]
    assert choose_providers(CPU_ONLY, "AzureExecutionProvider") == ["AzureExecutionProvider"]
    assert choose_providers(GPU, ("CUDAExecutionProvider",)) == ["CUDAExecutionProvider"]


@pytest.mark.parametrize("requested", ["cuda", ["cpu", "TensorrtExecutionProvider"], "rocm"])
def test_unavailable_provider_lists_the_available_ones(requested):
    with pytest.raises(ProviderError) as err:
        choose_providers(CPU_ONLY, requested)
    assert "is not available; available: AzureExecutionProvider, CPUExecutionProvider" in str(
        err.value
    )


def test_bad_requests():
    with pytest.raises(ProviderError, match="providers is empty"):
        choose_providers(CPU_ONLY, [])
    with pytest.raises(ProviderError, match="a provider is a name"):
        choose_providers(CPU_ONLY, [3])
    with pytest.raises(ProviderError, match="none of the supported execution providers"):
        choose_providers(["AzureExecutionProvider"])
