"""One-to-many generation: feed each sampled character back in as the next input."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .charlm import CharLM
from .errors import RnnscopeError
from .vocab import CharVocab


@torch.no_grad()
def generate(model: CharLM, vocab: CharVocab, prime: str, length: int, temperature: float = 1.0,
             seed: int | None = None) -> Iterator[str]:
    """Yield `length` characters after `prime`; temperature 0 means greedy (argmax)."""
    if not prime:
        raise RnnscopeError("the prime text is empty: give at least one character to start from")
    if length < 0:
        raise RnnscopeError(f"length must be 0 or more, got {length}")
    if temperature < 0:
        raise RnnscopeError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    model.eval()
    idx = vocab.encode_tensor(prime)[None, :]  # (1, T)
    logits, _, state = model(idx)
    last = logits[0, -1]  # (V,)
    for _ in range(length):
        last = last.clone()
        last[vocab.unk_id] = float("-inf")  # never emit the unknown placeholder
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            probs = torch.softmax(last.float() / temperature, dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        yield vocab.chars[nxt]
        logits, _, state = model(torch.tensor([[nxt]]), state)
        last = logits[0, -1]
