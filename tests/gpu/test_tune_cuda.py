"""The LoRA run of tests/tune/test_device_precision.py on CUDA, through the same code: `precision: auto` is bf16
autocast there, the bf16 checkpoint stays bf16 on the GPU, adapters and their AdamW state are fp32 on the GPU,
and a paused run resumes to the straight run's adapters."""

import pytest
import torch

from tests.conftest import tiny_model
from tests.train.conftest import pack_corpus
from tests.tune.test_device_precision import lora_plumbing_checks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_lora_on_cuda_in_bf16_through_the_tuning_setup(tmp_path):
    packed, _ = pack_corpus(tmp_path / "corpus", 300)
    torch.manual_seed(0)
    model_dir = tiny_model().to(torch.bfloat16).save_pretrained(tmp_path / "bf16-model")
    lora_plumbing_checks(model_dir, packed, tmp_path, device="cuda", precision="auto")
