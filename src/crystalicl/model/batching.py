"""Right-padded batches of token sequences: what training, validation loss and the copying check feed a model."""

from __future__ import annotations


def collate(examples, pad_id: int):
    """(ids, attention mask, labels) tensors of ``(ids, labels)`` array pairs, padded on the right (a causal model
    reads every position before the pads as it would unpadded); labels are -100 on the pads."""
    import torch

    n = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, :len(x)] = torch.as_tensor(x)
        labels[i, :len(y)] = torch.as_tensor(y)
        mask[i, :len(x)] = 1
    return ids, mask, labels
