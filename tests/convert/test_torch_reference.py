"""The PyTorch restatement's published training iteration (benchmarks' `--against-torch`)."""

import pytest

torch = pytest.importorskip("torch")

from tests.convert import torch_reference as ref  # noqa: E402


def _tiny_iteration(caption_loss_weight=10.0):
    torch.manual_seed(0)
    vocab, nef, z = 9, 8, 5
    modules = dict(
        text_encoder=ref.RNN_ENCODER(vocab, 6, nef),
        generator=ref.G_NET(2, nef, 6, z, 1, branch_num=2),
        discriminators=[ref.D_NET(64, 2, nef), ref.D_NET(128, 2, nef)],
        encoder=ref.EncoderCNN(6, blocks=(1, 1, 1, 1), width=4),
        decoder=ref.DecoderRNN(6, 7, vocab),
    )
    iteration = ref.PublishedIteration(**modules, z_dim=z,
                                       caption_loss_weight=caption_loss_weight)
    images = [torch.rand(3, 3, s, s) * 2 - 1 for s in (64, 128)]
    captions = torch.tensor([[3, 4, 5, 0], [2, 6, 0, 0], [7, 8, 3, 4]])
    lengths = torch.tensor([3, 2, 4])
    return iteration, modules, (images, captions, lengths)


def _copy(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return [not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True)]


def test_one_iteration_updates_g_and_every_d_and_leaves_stem_and_stream():
    iteration, modules, batch = _tiny_iteration()
    before = {k: _copy(m) for k, m in modules.items() if k != "discriminators"}
    d_before = [_copy(d) for d in modules["discriminators"]]
    average_before = [a.clone() for a in iteration.average]
    loss = iteration(*batch)
    assert loss == loss and loss > 0  # finite
    assert all(_changed(before["generator"], modules["generator"]))
    for d, old in zip(modules["discriminators"], d_before, strict=True):
        assert any(_changed(old, d))
    for frozen in ("text_encoder", "encoder", "decoder"):
        assert not any(_changed(before[frozen], modules[frozen])), frozen
    moved = [not torch.equal(a, b) for a, b in zip(average_before, iteration.average,
                                                   strict=True)]
    assert all(moved)


def test_the_caption_loss_reaches_the_generator():
    # From the same start and noise, lambda 0 and 10 give the generator other gradients.
    gradients = []
    for weight in (0.0, 0.0, 10.0):
        iteration, modules, batch = _tiny_iteration(weight)
        torch.manual_seed(1)
        iteration(*batch)
        gradients.append([p.grad.clone() for p in modules["generator"].parameters()])
    def largest_difference(first, second):
        return max(float((a - b).abs().max()) for a, b in zip(first, second, strict=True))

    assert largest_difference(gradients[0], gradients[1]) < 1e-7  # the same run twice
    assert largest_difference(gradients[0], gradients[2]) > 1e-5
