"""The untrained twin (vitviz.models.untrained_twin): same architecture and input size, seeded random weights."""

import torch

from vitviz.models import untrained_twin


def test_twin_keeps_size_and_classes_and_is_seeded(dinov2, dinov2_twin):
    assert dinov2_twin.facts == dinov2.facts and not dinov2_twin.trained
    state = torch.random.get_rng_state()
    again = untrained_twin(dinov2)
    assert torch.equal(torch.random.get_rng_state(), state), "the global random state moved"
    torch.testing.assert_close(again.model.pos_embed, dinov2_twin.model.pos_embed)
    assert not torch.equal(dinov2_twin.model.pos_embed, dinov2.model.pos_embed)
