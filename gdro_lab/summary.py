"""Aggregate runs into outcome and theory tables (``results.json`` and ``results.md``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gdro_core.stats import mean_ci
from gdro_lab import theory
from gdro_lab._io import write_json, write_text
from gdro_lab.run import RunResult, SimConfig

__all__ = [
    "matrix",
    "outcome",
    "regret",
    "series",
    "summarise",
    "to_markdown",
    "write_results",
]


def series(rows: Sequence[dict[str, float]], key: str) -> NDArray[np.float64]:
    """One metric over steps (NaN where a row lacks it).

    Examples:
        >>> series([{"eval/mean_success": 0.5}, {}, {"eval/mean_success": 0.75}],
        ...        "eval/mean_success")
        array([0.5 ,  nan, 0.75])
    """
    return np.array([r.get(key, math.nan) for r in rows], dtype=np.float64)


def matrix(
    rows: Sequence[dict[str, float]], prefix: str, num_bins: int, fill: float = math.nan
) -> NDArray[np.float64]:
    """Per-bin metric ``{prefix}{b}`` as a (T, B) array (``fill`` where absent).

    Examples:
        >>> rows = [{"rollout/n_mean/0": 6.0, "rollout/n_mean/2": 2.0}, {"rollout/n_mean/1": 4.0}]
        >>> matrix(rows, "rollout/n_mean/", 3)
        array([[ 6., nan,  2.],
               [nan,  4., nan]])
        >>> matrix(rows, "rollout/n_mean/", 3, fill=0.0)[1]
        array([0., 4., 0.])
    """
    return np.array(
        [[r.get(f"{prefix}{b}", fill) for b in range(num_bins)] for r in rows], dtype=np.float64
    )


def outcome(result: RunResult) -> dict[str, float]:
    """Final mean and worst-bin success, area under the curve and steps to target of a run.

    Examples:
        A run evaluated at steps 0, 10 and 20 on two strata of initial pass rate:

        >>> r = RunResult("uniform", 0, [], eval_steps=np.array([0, 10, 20]),
        ...               eval_mean=np.array([0.5, 0.6, 0.8]),
        ...               eval_strata=np.array([[0.1, 0.9], [0.2, 0.95], [0.4, 0.99]]),
        ...               strata_size=np.array([5, 5]), target=0.7)
        >>> for key, value in outcome(r).items():
        ...     print(key, round(value, 3))
        final_mean 0.8
        final_worst_bin 0.4
        auc 0.625
        auc_worst_bin 0.225
        steps_to_target 20.0
    """
    worst = np.nanmin(result.eval_strata, axis=1)
    return {
        "final_mean": float(result.eval_mean[-1]),
        "final_worst_bin": float(worst[-1]),
        "auc": theory.area_under_curve(result.eval_mean),
        "auc_worst_bin": theory.area_under_curve(worst),
        "steps_to_target": theory.steps_to_target(
            result.eval_steps, result.eval_mean, result.target
        ),
    }


def regret(
    result: RunResult, num_bins: int, eta: float, gamma: float, rule: str = "cumulative"
) -> dict[str, Any] | None:
    """Prompt-GDRO regret against the best fixed bin in hindsight, from the logs.

    The weights are ``prompt/q/{b}``, the distribution each step's plan used. The gains depend
    on the rule:

    * ``"cumulative"``: the increments of ``prompt/score/{b}`` (the rule sums its gains), so the
      Hedge bound applies and ``max_abs_q_vs_hedge`` checks the weights are Hedge's on them.
    * ``"ema"``: each bin's failure rate in the batch (``1 - train/reward/{b}``, 0 for an absent
      bin), the signal the rule smooths. The Hedge bound for the rule's eta is only a reference
      (the EMA rule has no regret guarantee) and ``max_abs_q_vs_hedge`` is NaN.

    Returns None when the run has no adversary weights (the lab's alternatives) or, for the
    cumulative rule, no scores.

    Examples:
        Logs of a Hedge player (eta 0.5, no mixing) on 4 steps of 2 bins, with cumulative
        scores; the weights match Hedge's exactly and the regret is within the bound:

        >>> from gdro_lab import theory
        >>> gains = np.array([[1.0, 0.0], [1.0, 0.5], [0.0, 1.0], [1.0, 0.0]])
        >>> q, score = theory.hedge_probs(gains, 0.5, 0.0), np.cumsum(gains, axis=0)
        >>> rows = [{"prompt/q/0": a, "prompt/q/1": b, "prompt/score/0": c, "prompt/score/1": d}
        ...         for (a, b), (c, d) in zip(q, score)]
        >>> r = RunResult("prompt-reweight", 0, rows, np.array([0]), np.array([0.5]),
        ...               np.array([[0.5]]), np.array([1]), 0.7)
        >>> out = regret(r, num_bins=2, eta=0.5, gamma=0.0)
        >>> round(out["regret"], 3), round(out["bound"], 3), out["max_abs_q_vs_hedge"]
        (0.806, 1.636, 0.0)
        >>> np.round(out["curve"], 3)
        array([0.5  , 0.689, 0.368, 0.806])
    """
    q = matrix(result.rows, "prompt/q/", num_bins)
    if np.isnan(q).all():
        return None
    if rule == "cumulative":
        score = matrix(result.rows, "prompt/score/", num_bins)
        if np.isnan(score).all():
            return None
        gains = np.diff(np.vstack([np.zeros((1, num_bins)), np.nan_to_num(score)]), axis=0)
        check = float(np.abs(theory.hedge_probs(gains, eta, gamma) - q).max())
    else:
        reward = matrix(result.rows, "train/reward/", num_bins)
        gains = np.where(np.isnan(reward), 0.0, 1.0 - reward)
        check = math.nan
    curve = theory.regret_curve(q, gains)
    t = len(result.rows)
    return {
        "regret": float(curve[-1]),
        "bound": theory.hedge_bound(num_bins, t, eta, gamma),
        "bound_applies": rule == "cumulative",
        "max_abs_q_vs_hedge": check,
        "gain_range": [float(gains.min()), float(gains.max())],
        "curve": curve,
    }


def summarise(cfg: SimConfig, results: Sequence[RunResult]) -> dict[str, Any]:
    """Everything ``results.json`` holds: per-strategy outcomes with 95% CIs and theory checks.

    Args:
        cfg: the simulation configuration.
        results: every run.

    Returns:
        A dict with ``config``, ``controllers`` (each strategy's settings,
        :meth:`SimConfig.settings`) and, per strategy, ``outcomes`` (each a (mean, 95%
        half-width) pair over seeds), ``budget``, ``wse``, ``price`` (strategies whose rollouts
        vary), ``regret`` (strategies with a prompt adversary, which log its weights) and
        ``curriculum``.

    The constants of the theory checks are read from the settings each run's controller was
    built with (:attr:`RunResult.controller`): the Hedge bound's eta and gamma and the score rule
    from its ``prompt`` settings, the dual step and price cap of the budget checks from its
    ``rollout`` settings (an alternative, which has no price, is checked with ``cfg.rollout``'s).

    Examples:
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("uniform", "rollout-neyman"), seeds=(0, 1),
        ...                 num_prompts=200, batch_size=16, steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, seed) for s in cfg.strategies for seed in cfg.seeds]
        >>> out = summarise(cfg, runs)
        >>> list(out)
        ['config', 'controllers', 'outcomes', 'budget', 'wse', 'price', 'regret', 'curriculum']
        >>> list(out["price"])  # the strategies whose rollouts vary
        ['rollout-neyman']
        >>> mean, half = out["outcomes"]["rollout-neyman"]["final_mean"]
        >>> round(mean, 3), round(half, 3), out["outcomes"]["rollout-neyman"]["seeds"]
        (0.702, 0.203, 2)
        >>> out["budget"]["rollout-neyman"]["max_abs_realised_gap"]  # exactly on budget
        0.0
    """
    b = cfg.classifier.num_bins
    out: dict[str, Any] = {
        "config": _config_dict(cfg),
        "controllers": {},
        "outcomes": {},
        "budget": {},
        "wse": {},
        "price": {},
        "regret": {},
        "curriculum": {},
    }
    for name in cfg.strategies:
        runs = [r for r in results if r.strategy == name]
        if not runs:
            continue
        outs = [outcome(r) for r in runs]
        row: dict[str, Any] = {k: mean_ci(np.array([o[k] for o in outs])) for k in outs[0]}
        row["reached_target"] = int(sum(math.isfinite(o["steps_to_target"]) for o in outs))
        row["seeds"] = len(runs)
        out["outcomes"][name] = row
        ctl = runs[0].controller  # the settings its controllers were built with (seeds aside)
        out["controllers"][name] = (
            cfg.settings(name) if ctl is None else ctl.replace(seed=None).to_dict()
        )
        rc = cfg.rollout if ctl is None else ctl.rollout
        out["wse"][name] = _wse(runs, b, cfg.batch_size, rc.mean)
        out["budget"][name] = _budget(runs, rc.mean, rc.dual_step, rc.mu_max, cfg.batch_size)
        out["budget"][name]["dual"] = ctl is not None and rc.mode == "bandit"
        out["budget"][name].update(dual_step=rc.dual_step, mu_max=rc.mu_max, arm_eta=rc.arm_eta)
        if ctl is not None and rc.mode != "fixed":
            out["price"][name] = _price(runs, b, rc.mean)
        if ctl is not None:
            pc = ctl.prompt
            reg = [regret(r, b, pc.eta, pc.gamma, pc.score_rule) for r in runs]
            found = [x for x in reg if x is not None]
            if found and len(found) == len(reg):
                out["regret"][name] = {
                    "regret": mean_ci(np.array([x["regret"] for x in found])),
                    "bound": found[0]["bound"],
                    "bound_applies": found[0]["bound_applies"],
                    "max_abs_q_vs_hedge": max(x["max_abs_q_vs_hedge"] for x in found),
                    "gain_max": max(x["gain_range"][1] for x in found),
                    "eta": pc.eta,
                    "gamma": pc.gamma,
                }
        out["curriculum"][name] = _curriculum(runs, b)
    return out


def _config_dict(cfg: SimConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["strategies"] = list(cfg.strategies)
    d["seeds"] = list(cfg.seeds)
    return d


def _wse(runs: Sequence[RunResult], num_bins: int, batch_size: int, mean: int) -> dict[str, Any]:
    """WSE reductions against every prompt at the mean budget, on the same batches.

    ``reduction``: with the true per-rollout reward std of each bin at each step (what the
    square-root law targets). ``reduction_loss``: the paper's diagnostic, with sigma_b the std of
    the per-prompt signal (the lab's per-prompt loss, up to sign) in bin b, estimated once from
    the run's own logs (pooled over steps).
    """
    red, red_loss, red_ney, red_opt = [], [], [], []
    for r in runs:
        w, u = series(r.rows, "sim/wse"), series(r.rows, "sim/wse_uniform")
        red.append(1.0 - float(np.nanmean(w)) / float(np.nanmean(u)))
        red_ney.append(
            1.0 - float(np.nanmean(series(r.rows, "sim/wse_neyman_oracle"))) / float(np.nanmean(u))
        )
        red_opt.append(
            1.0 - float(np.nanmean(series(r.rows, "sim/wse_optimal"))) / float(np.nanmean(u))
        )
        share = np.nan_to_num(matrix(r.rows, "classifier/share/", num_bins))
        count = share * batch_size
        g1 = np.nan_to_num(matrix(r.rows, "sim/signal_mean/", num_bins)) * count
        g2 = np.nan_to_num(matrix(r.rows, "sim/signal_sq/", num_bins)) * count
        tot = np.maximum(count.sum(axis=0), 1.0)
        sigma = np.sqrt(np.maximum(g2.sum(axis=0) / tot - (g1.sum(axis=0) / tot) ** 2, 0.0))
        n = matrix(r.rows, "rollout/n_mean/", num_bins)
        alloc = theory.wse(share, sigma[None, :], n)
        flat = theory.wse(share, sigma[None, :], np.full_like(share, float(mean)))
        red_loss.append(1.0 - float(alloc.mean()) / float(flat.mean()))
    return {
        "reduction": mean_ci(np.array(red)),
        "reduction_loss": mean_ci(np.array(red_loss)),
        "reduction_neyman_oracle": mean_ci(np.array(red_ney)),
        "reduction_optimal": mean_ci(np.array(red_opt)),
    }


def _budget(
    runs: Sequence[RunResult], target: int, alpha: float, mu_max: float, batch_size: int
) -> dict[str, Any]:
    """Realised budget, average violation and the dual recursion, checked from the logs.

    ``dual_recursion_error``: max over steps of
    ``|mu_{t+1} - clip(mu_t + alpha (m_t - target), 0, mu_max)|`` (0 when the logged price
    follows the documented update). ``cumulative_slack``: max over t of
    ``sum_{s<=t} (m_s - target) - mu_{t+1} / alpha``, which is <= 0 when the price never hits
    its cap (the exact form of the O(1/sqrt T) bound).
    """
    gaps, avg, hit, rec_err, slack = [], [], False, 0.0, -math.inf
    for r in runs:
        realised = series(r.rows, "train/rollouts") / batch_size
        proposal = series(r.rows, "rollout/mean_proposed")
        price = series(r.rows, "rollout/shadow_price")
        if np.isnan(proposal).all():
            proposal = realised
            price = np.zeros_like(realised)
        st = theory.budget_stats(realised, proposal, price, float(target), alpha, mu_max)
        gaps.append(float(np.abs(st.realised_gap).max()))
        avg.append(st.average_violation)
        hit |= st.price_hit_cap
        if price.size > 1:
            pred = np.clip(price[:-1] + alpha * st.proposal_gap[:-1], 0.0, mu_max)
            rec_err = max(rec_err, float(np.abs(pred - price[1:]).max()))
            if alpha > 0:
                slack = max(
                    slack, float(np.max(np.cumsum(st.proposal_gap)[:-1] - price[1:] / alpha))
                )
    t = len(runs[0].rows)
    return {
        "max_abs_realised_gap": max(gaps),
        "average_violation": mean_ci(np.array(avg)),
        "dual_bound": mu_max / (alpha * t) if alpha > 0 else math.inf,
        "price_hit_cap": hit,
        "dual_recursion_error": rec_err,
        "cumulative_slack": slack,
    }


def _column_means(m: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean of each column over its finite entries (NaN for a column without any)."""
    ok = np.isfinite(m)
    out: NDArray[np.float64] = np.where(
        ok.any(axis=0), np.where(ok, m, 0.0).sum(axis=0) / np.maximum(ok.sum(axis=0), 1), math.nan
    )
    return out


def _price(runs: Sequence[RunResult], num_bins: int, mean: int) -> dict[str, Any]:
    """Rollout-GDRO's price and allocation against the square-root law on the same batches.

    After a burn-in of the first fifth of the steps: the mean logged price and the mean KKT price
    ``sim/mu_star`` of the bounded square-root law with the bins' true variances; the
    allocation's share-weighted mean absolute deviation from that law's rollouts
    ``sim/neyman_n/{b}``, beside the same deviation for every prompt at the mean budget; and
    (first seed) the per-bin mean rollouts of both and their correlation across bins.
    """
    price, mu_star, ratio, dev, dev_flat = [], [], [], [], []
    for r in runs:
        burn = len(r.rows) // 5
        mu = series(r.rows, "rollout/shadow_price")[burn:]
        ms = series(r.rows, "sim/mu_star")[burn:]
        price.append(float(np.nanmean(mu)))
        mu_star.append(float(np.nanmean(ms)))
        ratio.append(price[-1] / mu_star[-1])
        share = np.nan_to_num(matrix(r.rows, "classifier/share/", num_bins))[burn:]
        n = matrix(r.rows, "rollout/n_mean/", num_bins)[burn:]
        ney = matrix(r.rows, "sim/neyman_n/", num_bins)[burn:]
        w = np.where(np.isfinite(n) & np.isfinite(ney), share, 0.0)
        dev.append(float(np.sum(w * np.abs(np.nan_to_num(n - ney))) / w.sum()))
        dev_flat.append(float(np.sum(w * np.abs(np.nan_to_num(mean - ney))) / w.sum()))
    r = runs[0]
    burn = len(r.rows) // 5
    share = np.nan_to_num(matrix(r.rows, "classifier/share/", num_bins))[burn:]
    n = _column_means(matrix(r.rows, "rollout/n_mean/", num_bins)[burn:])
    ney = _column_means(matrix(r.rows, "sim/neyman_n/", num_bins)[burn:])
    ok = np.isfinite(n) & np.isfinite(ney)
    corr = (
        float(np.corrcoef(n[ok], ney[ok])[0, 1])
        if ok.sum() > 2 and n[ok].std() > 0 and ney[ok].std() > 0
        else math.nan
    )
    return {
        "price": mean_ci(np.array(price)),
        "mu_star": mean_ci(np.array(mu_star)),
        "price_over_mu_star": mean_ci(np.array(ratio)),
        "deviation": mean_ci(np.array(dev)),
        "deviation_flat": mean_ci(np.array(dev_flat)),
        "bin_share": share.mean(axis=0).tolist(),
        "bin_rollouts": [None if not math.isfinite(x) else float(x) for x in n],
        "bin_neyman": [None if not math.isfinite(x) else float(x) for x in ney],
        "bin_corr": corr,
    }


def _curriculum(runs: Sequence[RunResult], num_bins: int) -> dict[str, Any]:
    """Mean bin at the start and end; lead and lead-lag after a burn-in of the first fifth.

    The first epoch sends every unseen prompt to bin 0 and then jumps, a step that would dominate
    any correlation, so lead and lag use the last four fifths of the steps. A lag is reported
    only when its correlation is positive.
    """
    r = runs[0]
    share = np.nan_to_num(matrix(r.rows, "classifier/share/", num_bins))
    bins = np.arange(num_bins)
    out: dict[str, Any] = {
        "mean_bin_start": float(share[0] @ bins),
        "mean_bin_end": float(share[-1] @ bins),
    }
    q = matrix(r.rows, "prompt/q/", num_bins)
    if np.isnan(q).all():
        return out
    burn = len(r.rows) // 5
    delta, lag, corr = theory.lead_lag(
        q[burn:], share[burn:], max_lag=max(1, (len(r.rows) - burn) // 5)
    )
    out["mean_lead"] = float(delta.mean())
    if math.isfinite(corr) and corr > 0:
        out["lag"], out["lag_corr"] = lag, corr
    return out


def _fmt(ci: Any, digits: int = 3) -> str:
    m, h = ci
    if m is None or not math.isfinite(m):
        return "n/a"
    if h is None or not math.isfinite(h):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def _pct(ci: Any) -> str:
    m, h = ci
    return _fmt((None if m is None else 100 * m, None if h is None else 100 * h), 1) + "%"


def to_markdown(results: dict[str, Any]) -> str:
    """The tables of ``results.md`` (means over seeds ± 95% t-interval half-widths).

    Args:
        results: the output of :func:`summarise`.

    Returns:
        Markdown text.

    Examples:
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("uniform", "knapsack"), num_prompts=200, batch_size=16,
        ...                 steps=20, eval_every=5, eval_size=200)
        >>> runs = [run_one(cfg, s, 0) for s in cfg.strategies]
        >>> md = to_markdown(summarise(cfg, runs))
        >>> lines = md.splitlines()
        >>> print("\\n".join(line for line in lines if line.startswith("#")))
        # Simulation: scenario `stationary`
        ## Outcomes
        ## Rollout budget
        ## Weighted standard error
        ## Prompt-GDRO regret
        ## Curriculum
        >>> print("\\n".join(lines[lines.index("## Outcomes") + 4 :][:4]))  # one seed: no ± part
        | strategy | final mean | final worst bin | AUC | AUC worst bin | steps to target |
        |---|---|---|---|---|---|
        | uniform | 0.685 | 0.016 | 0.681 | 0.016 | n/a (0/1) |
        | knapsack | 0.686 | 0.016 | 0.681 | 0.016 | n/a (0/1) |
    """
    c = results["config"]
    shared = next(iter(results["controllers"].values()))  # bins and budget: every strategy's
    lines = [
        f"# Simulation: scenario `{c['scenario']}`",
        "",
        f"{len(c['seeds'])} seeds, {c['steps']} steps, batch {c['batch_size']} prompts x "
        f"{shared['rollout']['mean']} rollouts on average (equal compute for every strategy), "
        f"{c['num_prompts']:,} prompts, {shared['classifier']['num_bins']} bins. "
        "Values are means over seeds ± the half-width of a 95% t-interval.",
        "",
        "## Outcomes",
        "",
        "Success is the true per-rollout success probability on a fixed evaluation subsample; "
        "worst bin = the lowest mean success over strata of initial pass rate (0.1 wide); "
        "AUC = mean of the learning curve; steps to target = first evaluation at which mean "
        "success reaches the target (runs that reach it / seeds).",
        "",
        "| strategy | final mean | final worst bin | AUC | AUC worst bin | steps to target |",
        "|---|---|---|---|---|---|",
    ]
    for name, o in results["outcomes"].items():
        steps = _fmt(o["steps_to_target"], 0)
        lines.append(
            f"| {name} | {_fmt(o['final_mean'])} | {_fmt(o['final_worst_bin'])} | "
            f"{_fmt(o['auc'])} | {_fmt(o['auc_worst_bin'])} | {steps} "
            f"({o['reached_target']}/{o['seeds']}) |"
        )
    lines += [
        "",
        "## Rollout budget",
        "",
        "Realised mean rollouts per prompt against the target each step, and the average "
        "violation (1/T) sum_t (m_t - target) of the unconstrained proposal m_t that drives "
        "the shadow price, beside the bound mu_max / (alpha T) that holds while the price "
        "stays below its cap. The dual columns (bandit mode, whose price follows the dual "
        "update) check the logged price against mu_{t+1} = clip(mu_t + alpha (m_t - target), "
        "0, mu_max) and the exact bound sum_{s<=t} (m_s - target) <= mu_{t+1} / alpha "
        "(slack <= 0).",
        "",
        "| strategy | max abs realised gap | average violation | bound | price hit cap | "
        "dual recursion error | max cumulative slack |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, o in results["budget"].items():
        lines.append(
            f"| {name} | {o['max_abs_realised_gap']:.3g} | "
            f"{_fmt(o['average_violation'], 4)} | {o['dual_bound']:.4f} | "
            f"{'yes' if o['price_hit_cap'] else 'no'} | "
            + (
                f"{o['dual_recursion_error']:.1e} | {o['cumulative_slack']:.3g} |"
                if o["dual"]
                else "n/a | n/a |"
            )
        )
    lines += [
        "",
        "## Weighted standard error",
        "",
        "WSE = sum_b share_b sigma_b / sqrt(n_b) per step; reduction = 1 - mean WSE / "
        "mean WSE with every prompt at the mean budget, on the same batches. Reward std: "
        "sigma_b is the true per-rollout reward std of the bin's prompts that step (what "
        "the square-root law targets). Loss std (the paper's diagnostic): sigma_b is the "
        "std of the per-prompt GRPO signal in the bin, estimated once per run.",
        "",
        "The last two columns are continuous benchmarks on the same batches, without the "
        "[min, max] bounds: the square-root law with the true variances, and the WSE "
        "minimiser (n_b proportional to sigma_b^(2/3)), an upper bound on any allocator's "
        "reward-std reduction.",
        "",
        "| strategy | reduction (reward std) | reduction (loss std, paper) | "
        "oracle square-root law | WSE-optimal bound |",
        "|---|---|---|---|---|",
    ]
    for name, o in results["wse"].items():
        lines.append(
            f"| {name} | {_pct(o['reduction'])} | {_pct(o['reduction_loss'])} | "
            f"{_pct(o['reduction_neyman_oracle'])} | {_pct(o['reduction_optimal'])} |"
        )
    if results.get("price"):
        lines += [
            "",
            "## Rollout-GDRO price and allocation",
            "",
            "Against the square-root law on the same batches with the bins' true variances "
            "(within [min, max]), after a burn-in of the first fifth of the steps: mean "
            "logged price and mean KKT price mu*, their ratio, and the share-weighted mean "
            "absolute deviation of rollouts per prompt from the law's, beside that of "
            "every prompt at the mean budget. Corr: across bins, of the first seed's mean "
            "rollouts per bin and the law's.",
            "",
            "| strategy | arm eta | dual step | price | mu* | price / mu* | "
            "deviation from law | uniform's deviation | corr |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, o in results["price"].items():
            rc = results["budget"][name]
            corr = o["bin_corr"]
            knobs = f"{rc['arm_eta']:g} | {rc['dual_step']:g}" if rc["dual"] else "n/a | n/a"
            lines.append(
                f"| {name} | {knobs} | "
                f"{_fmt(o['price'], 4)} | {_fmt(o['mu_star'], 4)} | "
                f"{_fmt(o['price_over_mu_star'], 2)} | {_fmt(o['deviation'], 2)} | "
                f"{_fmt(o['deviation_flat'], 2)} | "
                f"{'n/a' if not math.isfinite(corr) else f'{corr:.2f}'} |"
            )
    if results["regret"]:
        lines += [
            "",
            "## Prompt-GDRO regret",
            "",
            "Regret of the adversary's weights against the best fixed bin in hindsight, "
            "beside the Hedge bound ln B/eta + eta T/8 + gamma T for its eta and gamma. "
            'With `score_rule="cumulative"` the gains are the increments of its '
            "cumulative scores, the bound applies (for gains in [0, 1]) and "
            "max abs(q - Hedge) checks the weights are Hedge's on them. With the EMA rule "
            "the gains are the bins' failure rates and the bound is only a reference.",
            "",
            "| strategy | regret | bound | bound applies | max abs(q - Hedge) | largest gain |",
            "|---|---|---|---|---|---|",
        ]
        for name, o in results["regret"].items():
            check = o["max_abs_q_vs_hedge"]
            lines.append(
                f"| {name} | {_fmt(o['regret'], 2)} | {o['bound']:.2f} | "
                f"{'yes' if o['bound_applies'] else 'no (reference)'} | "
                f"{'n/a' if not math.isfinite(check) else f'{check:.2e}'} | "
                f"{o['gain_max']:.3g} |"
            )
    lines += [
        "",
        "## Curriculum",
        "",
        "Mean classifier bin of the batch at the first and last step; mean lead "
        "Delta = sum_b b q_b - sum_b b share_b of the adversary over the data (negative: the "
        "adversary favours harder bins than the data holds), the lag (steps) at which the "
        "adversary's mean bin best correlates with the data's later mean bin, and that "
        "correlation (n/a when no lag correlates positively); first seed, after a burn-in "
        "of the first fifth of the steps.",
        "",
        "| strategy | mean bin start | mean bin end | mean lead | lag | corr |",
        "|---|---|---|---|---|---|",
    ]
    for name, o in results["curriculum"].items():
        lead = f"{o['mean_lead']:.2f}" if "mean_lead" in o else "n/a"
        lag = str(o["lag"]) if "lag" in o else "n/a"
        corr = f"{o['lag_corr']:.2f}" if "lag_corr" in o and math.isfinite(o["lag_corr"]) else "n/a"
        lines.append(
            f"| {name} | {o['mean_bin_start']:.2f} | {o['mean_bin_end']:.2f} | {lead} | "
            f"{lag} | {corr} |"
        )
    return "\n".join(lines) + "\n"


def write_results(out: str | Path, results: dict[str, Any]) -> None:
    """Write ``results.json`` (every number) and ``results.md`` (the tables) into ``out``.

    ``results.md`` is :func:`to_markdown`'s text followed, when ``results`` lists ``plots`` (PNG
    file names in ``out``), by a section linking them. Both files are written atomically.

    Args:
        out: the results folder (created).
        results: the output of :func:`summarise`, with ``runs`` and ``plots`` when known.

    Examples:
        >>> import json, tempfile
        >>> from gdro_lab.run import run_one
        >>> cfg = SimConfig(strategies=("uniform",), num_prompts=200, batch_size=16, steps=5,
        ...                 eval_size=200)
        >>> results = {**summarise(cfg, [run_one(cfg, "uniform", 0)]), "plots": ["a.png"]}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_results(d, results)
        ...     saved = json.loads(Path(d, "results.json").read_text())
        ...     md = Path(d, "results.md").read_text()
        ...     print(sorted(p.name for p in Path(d).iterdir()))
        ['results.json', 'results.md']
        >>> saved["plots"], md.endswith("## Plots\\n\\n![a.png](a.png)\\n\\n")
        (['a.png'], True)
    """
    write_json(Path(out) / "results.json", results)
    names = results.get("plots", [])
    links = "\n## Plots\n\n" + "".join(f"![{n}]({n})\n\n" for n in names) if names else ""
    write_text(Path(out) / "results.md", to_markdown(results) + links)
