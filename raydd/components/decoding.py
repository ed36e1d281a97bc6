"""Greedy and beam-search decoding for open_clip CoCa models.

open_clip's own ``CoCa.generate`` builds on Hugging Face ``transformers`` generation classes, and
the open_clip release we use needs a transformers version (<= 4.56) that the sentence-transformers
release the offline text encoder needs (>= 5) excludes. Decoding is a short loop over the model's
public forward pass (image embeddings + tokens so far -> next-token logits), so raydd does it here
and depends on neither. Both strategies are deterministic: no sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DecodingSettings:
    strategy: str = "greedy"  # "greedy" | "beam"
    num_beams: int = 3
    max_tokens: int = 20  # generated tokens, end token included
    min_tokens: int = 3  # the end token is forbidden before this many tokens
    length_penalty: float = 1.0  # beam scores are log p / length**length_penalty

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "beam"):
            raise ValueError(f"decoding strategy must be 'greedy' or 'beam', got {self.strategy!r}")
        if self.num_beams < 1 or self.max_tokens < 1 or not 0 <= self.min_tokens < self.max_tokens:
            raise ValueError(f"bad decoding settings: {self}")


class _NextToken:
    """Log-probabilities of the next token for a batch of prefixes, image features fixed."""

    def __init__(self, model: torch.nn.Module, image_latent: torch.Tensor, image_embs: torch.Tensor, end: int) -> None:
        self.model, self.latent, self.embs, self.end = model, image_latent, image_embs, end

    def __call__(self, prefixes: torch.Tensor, rows: torch.Tensor | None = None, forbid_end: bool = False) -> torch.Tensor:
        latent = self.latent if rows is None else self.latent[rows]
        embs = self.embs if rows is None else self.embs[rows]
        logits = self.model(None, prefixes, image_latent=latent, image_embs=embs, output_labels=False)["logits"][:, -1]
        log_probs = F.log_softmax(logits.float(), dim=-1)
        if forbid_end:
            log_probs[:, self.end] = float("-inf")
        return log_probs


def decode(model: torch.nn.Module, pixels: torch.Tensor, start: int, end: int, settings: DecodingSettings) -> list[list[int]]:
    """Token ids generated for each image (start token dropped, stopped before the end token)."""
    with torch.no_grad():
        latent, embs = model._encode_image(pixels)
        next_token = _NextToken(model, latent, embs, end)
        if settings.strategy == "greedy":
            return _greedy(next_token, len(pixels), pixels.device, start, end, settings)
        return _beam(next_token, len(pixels), pixels.device, start, end, settings)


def _greedy(next_token: _NextToken, count: int, device, start: int, end: int, s: DecodingSettings) -> list[list[int]]:
    tokens = torch.full((count, 1), start, dtype=torch.long, device=device)
    finished = torch.zeros(count, dtype=torch.bool, device=device)
    for step in range(s.max_tokens):
        chosen = next_token(tokens, forbid_end=step < s.min_tokens).argmax(dim=-1)
        chosen = torch.where(finished, torch.full_like(chosen, end), chosen)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        finished |= chosen == end
        if bool(finished.all()):
            break
    return [_until_end(row[1:].tolist(), end) for row in tokens]


def _beam(next_token: _NextToken, count: int, device, start: int, end: int, s: DecodingSettings) -> list[list[int]]:
    """Standard beam search: keep the k best live prefixes; a prefix that picks the end token
    among the top k candidates becomes a finished hypothesis; an image is done with k of them."""
    k = s.num_beams
    rows = torch.arange(count, device=device).repeat_interleave(k)  # image of each live beam
    prefixes = torch.full((count * k, 1), start, dtype=torch.long, device=device)
    scores = torch.full((count, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: expand only the first, or the k beams would be copies
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(count)]
    done = [False] * count

    for step in range(s.max_tokens):
        log_probs = next_token(prefixes, rows, forbid_end=step < s.min_tokens)
        vocab = log_probs.shape[-1]
        candidates = (scores.reshape(-1, 1) + log_probs).reshape(count, k * vocab)
        top_scores, top_index = candidates.topk(2 * k, dim=1)
        next_prefixes, next_scores = [], []
        for image in range(count):
            kept: list[tuple[float, torch.Tensor]] = []
            for rank in range(2 * k):
                score = float(top_scores[image, rank])
                beam, token = divmod(int(top_index[image, rank]), vocab)
                prefix = prefixes[image * k + beam]
                if token == end:
                    if rank < k and not done[image]:
                        generated = prefix[1:].tolist()
                        finished[image].append((score / (len(generated) + 1) ** s.length_penalty, generated))
                    continue
                kept.append((score, torch.cat([prefix, prefix.new_tensor([token])])))
                if len(kept) == k:
                    break
            done[image] = done[image] or len(finished[image]) >= k
            next_prefixes += [p for _, p in kept]
            next_scores.append([sc for sc, _ in kept])
        if all(done):
            break
        prefixes = torch.stack(next_prefixes)
        scores = torch.tensor(next_scores, device=device)

    results = []
    for image in range(count):
        hypotheses = finished[image] or [
            (float(scores[image, b]) / (prefixes.shape[1] - 1) ** s.length_penalty, prefixes[image * k + b][1:].tolist())
            for b in range(k)
        ]
        results.append(max(hypotheses, key=lambda h: h[0])[1])
    return results


def _until_end(tokens: list[int], end: int) -> list[int]:
    return tokens[: tokens.index(end)] if end in tokens else tokens
