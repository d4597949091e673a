"""The GRPO maths on tensors: group-normalised advantages, token log-probs, the clipped loss.

Pure functions, no state. Shapes: ``R`` responses (all groups concatenated in plan order), ``T``
response tokens (right-padded), ``n`` prompts (groups).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["LossParts", "group_advantages", "policy_loss", "sequence_logprobs"]


def group_advantages(
    rewards: Tensor, group_sizes: Tensor, *, eps: float = 1e-6, clip: float = 5.0
) -> Tensor:
    r"""GRPO advantages for groups of unequal size.

    .. math:: A_{i,j} = \mathrm{clip}\big((r_{i,j} - \bar r_i) / (\sigma_i + \epsilon), -c, c\big)

    with :math:`\sigma_i` the sample standard deviation (divisor :math:`n_i - 1`, as verl). A group
    whose rewards are all equal gets 0.

    Args:
        rewards: float (R,), groups concatenated in order.
        group_sizes: int64 (n,), every entry >= 2, summing to R.
        eps: Added to the standard deviation.
        clip: Advantages are clipped to ``[-clip, clip]``.

    Returns:
        float (R,) advantages, aligned with ``rewards``.

    Raises:
        ValueError: If a group has fewer than 2 responses or the sizes do not sum to R.

    Examples:
        >>> adv = group_advantages(torch.tensor([1., 0., 0., 1., 1.]), torch.tensor([2, 3]))
        >>> [round(a, 4) for a in adv.tolist()]
        [0.7071, -0.7071, -1.1547, 0.5773, 0.5773]
    """
    sizes = group_sizes.to(torch.long)
    if sizes.numel() and int(sizes.min()) < 2:
        raise ValueError(
            f"every group needs >= 2 responses (a group of 1 has no baseline); "
            f"got sizes {sizes.tolist()}"
        )
    if int(sizes.sum()) != rewards.numel():
        raise ValueError(
            f"group sizes sum to {int(sizes.sum())}, but there are {rewards.numel()} rewards"
        )
    r = rewards.to(torch.float64)
    group = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    n = sizes.to(torch.float64)
    mean = torch.zeros(sizes.numel(), dtype=torch.float64).index_add_(0, group, r) / n
    centred = r - mean[group]
    var = torch.zeros_like(mean).index_add_(0, group, centred**2) / (n - 1)
    lo = torch.full_like(mean, float("inf")).scatter_reduce(0, group, r, "amin")
    hi = torch.full_like(mean, float("-inf")).scatter_reduce(0, group, r, "amax")
    adv = centred / (var.sqrt()[group] + eps)
    adv = torch.where((hi == lo)[group], torch.zeros_like(adv), adv)
    return adv.clamp(-clip, clip).to(rewards.dtype)


def sequence_logprobs(
    model: Any, input_ids: Tensor, attention_mask: Tensor, num_prompt_tokens: int
) -> Tensor:
    """Log-probabilities of the response tokens under ``model``.

    The prompt part is left-padded, so positions are counted from each row's first real token
    (``attention_mask.cumsum(-1) - 1``), as Hugging Face ``generate`` does.

    Args:
        model: A causal LM.
        input_ids: int64 (B, P + T): left-padded prompts then right-padded responses.
        attention_mask: int64 (B, P + T).
        num_prompt_tokens: P.

    Returns:
        float32 (B, T): log pi(token_t | prefix) for every response position.

    Examples:
        Two prompts (the first left-padded by two tokens) and two response tokens each:

        >>> from gdro_torch.model import build_embedded
        >>> model, tok = build_embedded("tiny-llama-0.1m", seed=0)
        >>> enc = tok(["1+2=", "12+30="], padding=True, return_tensors="pt")
        >>> enc["attention_mask"].tolist()
        [[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]
        >>> pairs = [["3", "<eos>"], ["2", "4"]]  # "1+2=3", "12+30=24" (digits reversed)
        >>> answers = torch.tensor([tok.convert_tokens_to_ids(a) for a in pairs])
        >>> ids = torch.cat([enc["input_ids"], answers], dim=1)
        >>> mask = torch.cat([enc["attention_mask"], torch.ones_like(answers)], dim=1)
        >>> logp = sequence_logprobs(model, ids, mask, num_prompt_tokens=7)
        >>> logp.shape, bool((logp < 0).all())
        (torch.Size([2, 2]), True)

        Padding changes nothing: the first row without its two pad tokens gives the same values.

        >>> alone = sequence_logprobs(model, ids[:1, 2:], mask[:1, 2:], num_prompt_tokens=5)
        >>> torch.allclose(alone, logp[:1], atol=1e-5)
        True
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    ).logits
    logits = logits[:, num_prompt_tokens - 1 : -1].float()
    targets = input_ids[:, num_prompt_tokens:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class LossParts(NamedTuple):
    """Per-token and per-response pieces of the GRPO loss (all masked already).

    Attributes:
        train: float (B, T) per-token training loss: ``-w * surrogate + kl_coef * kl``.
        response_loss: float (B,) the per-response loss of the paper, unweighted:
            token mean of ``-surrogate + kl_coef * kl`` (detached).
        kl: float (B,) token-mean KL estimate per response (detached; 0 without a reference).
        clipped: float (B,) fraction of tokens whose ratio was clipped (detached).

    Examples:
        >>> ratio = torch.tensor([[1.0, 2.0], [0.5, 1.0]])
        >>> parts = policy_loss(
        ...     ratio.log(), torch.zeros(2, 2), torch.tensor([1.0, -1.0]), torch.ones(2),
        ...     torch.ones(2, 2),
        ... )
        >>> parts._fields
        ('train', 'response_loss', 'kl', 'clipped')
        >>> parts.train.shape, parts.response_loss.shape, parts.clipped.tolist()
        (torch.Size([2, 2]), torch.Size([2]), [0.5, 0.5])
    """

    train: Tensor
    response_loss: Tensor
    kl: Tensor
    clipped: Tensor


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    weights: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
) -> LossParts:
    r"""The clipped policy-gradient loss with asymmetric clipping and an optional KL penalty.

    .. math::
        \ell_{i,j,t} = -w_i \min\big(\rho_t A_{i,j},\ \mathrm{clip}(\rho_t, 1-\epsilon_l,
        1+\epsilon_h) A_{i,j}\big) + \beta\,\widehat{KL}_t,\quad
        \widehat{KL}_t = e^{q_t} - q_t - 1,\ q_t = \log\pi_{ref} - \log\pi_\theta

    (the "k3" estimator, clamped to [-10, 10] as verl's ``low_var_kl``). Since ``w_i >= 0``,
    weighting the advantage equals weighting the surrogate.

    Args:
        logp: float (B, T) current log-probs (with grad).
        old_logp: float (B, T) log-probs of the sampling policy.
        advantages: float (B,) per-response advantages (unweighted).
        weights: float (B,) the prompt's weight, repeated over its responses.
        mask: float (B, T), 1 on response tokens (up to and including ``<eos>``).
        clip_low: Lower clip range, 0.2.
        clip_high: Upper clip range, 0.28.
        ref_logp: float (B, T) reference log-probs, or None for no KL term.
        kl_coef: KL coefficient beta.

    Returns:
        :class:`LossParts`.

    Examples:
        Ratios 2 (advantage +1) and 0.5 (advantage -1) fall outside [0.8, 1.28] and are
        clipped; the first response's weight is 2, the second's last token is padding:

        >>> ratio = torch.tensor([[1.0, 2.0], [0.5, 1.0]])
        >>> parts = policy_loss(
        ...     logp=ratio.log(),
        ...     old_logp=torch.zeros(2, 2),
        ...     advantages=torch.tensor([1.0, -1.0]),
        ...     weights=torch.tensor([2.0, 1.0]),
        ...     mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
        ... )
        >>> [[round(x, 4) for x in row] for row in parts.train.tolist()]
        [[-2.0, -2.56], [0.8, 0.0]]
        >>> [round(x, 4) for x in parts.response_loss.tolist()], parts.clipped.tolist()
        ([-1.14, 0.8], [0.5, 1.0])

        With a reference policy the k3 KL estimate enters, scaled by ``kl_coef``:

        >>> logp = torch.zeros(1, 2)
        >>> ref = torch.log(torch.tensor([[1.0, 0.5]]))
        >>> parts = policy_loss(
        ...     logp, logp, torch.zeros(1), torch.ones(1), torch.ones(1, 2),
        ...     ref_logp=ref, kl_coef=0.1,
        ... )
        >>> round(parts.kl.item(), 4), [round(x, 4) for x in parts.train[0].tolist()]
        (0.0966, [0.0, 0.0193])
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    if ref_logp is not None and kl_coef > 0:
        q = ref_logp - logp
        kl = (torch.exp(q) - q - 1).clamp(-10.0, 10.0)
    else:
        kl = torch.zeros_like(logp)
    train = (-weights[:, None] * surrogate + kl_coef * kl) * mask
    length = mask.sum(-1).clamp(min=1)
    response_loss = (((-surrogate + kl_coef * kl) * mask).sum(-1) / length).detach()
    clipped = (((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float() * mask).sum(-1) / length
    return LossParts(
        train, response_loss, ((kl * mask).sum(-1) / length).detach(), clipped.detach()
    )
