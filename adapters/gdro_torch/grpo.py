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
