"""Text samples from a model: the few the trainer logs at the end of a run, and ``generate``'s."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from gpt5_ablate.errors import ConfigError

SAMPLE_PROMPTS = ("def ", "import ", "The ")


@torch.no_grad()
def sample_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    seed: int,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
) -> list[str]:
    """One sampled continuation per prompt (prompt included), decoded with the KV cache."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    max_len = model.arch.model.max_seq_len
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
        if ids.size(1) == 0:
            raise ConfigError("prompt is empty after tokenization; give at least one character.")
        budget = min(max_new_tokens, max_len - ids.size(1))
        if budget <= 0:
            raise ConfigError(
                f"the prompt has {ids.size(1)} tokens, at or above the model's max_seq_len "
                f"{max_len}; shorten it."
            )
        out = model.generate(
            ids, budget, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        texts.append(tokenizer.decode(out[0].tolist()))
    model.train(was_training)
    return texts


def samples_file_text(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    n: int,
    max_new_tokens: int,
    seed: int,
) -> str:
    """The run dir's ``samples.txt``: ``n`` samples from the standard prompts."""
    if n <= 0:
        return ""
    prompts = (SAMPLE_PROMPTS * n)[:n]
    texts = sample_texts(model, tokenizer, prompts, max_new_tokens, seed)
    return "\n".join(f"--- prompt: {p!r}\n{t}\n" for p, t in zip(prompts, texts, strict=True))
