"""Per-domain perplexity: an `evaluate` module that loads offline from its folder.

Inputs, one row per evaluated sequence (or document):

- ``losses``: the mean next-token negative log-likelihood (natural log) of the row;
- ``domains``: the row's domain (mixture component) name;
- ``num_tokens``: how many predicted tokens the loss averages over (the weight of
  the row; 1 for equally weighted rows).

Output: ``perplexity`` and ``loss`` per domain (token-weighted), the
``mean_perplexity`` over domains (each domain counts once), the
``worst_domain`` and its ``worst_perplexity``, and ``overall_perplexity``
(token-weighted over every row).

>>> import evaluate
>>> from hf_mixture.callbacks import domain_perplexity_path
>>> metric = evaluate.load(domain_perplexity_path())              # doctest: +SKIP
>>> metric.compute(losses=[2.0, 2.2, 3.0], domains=["code", "code", "prose"],
...                num_tokens=[255, 255, 255])["perplexity"]          # doctest: +SKIP
{'code': 8.166169912567652, 'prose': 20.085536923187668}
"""

# One import per line: evaluate's dependency scanner misreads `import a, b`.
import math

import datasets
import evaluate
import numpy as np

_CITATION = ""

_DESCRIPTION = """Perplexity of a language model on each domain of a data mixture, from the
mean token losses of evaluated sequences: exp(token-weighted mean loss) per domain, the mean
over domains, the worst domain, and the overall value."""

_KWARGS_DESCRIPTION = """
Args:
    losses (list of float): mean next-token negative log-likelihood (natural log) of each row.
    domains (list of str): domain name of each row.
    num_tokens (list of int): predicted tokens behind each loss (row weight, > 0).
Returns:
    perplexity (dict): domain -> exp(token-weighted mean loss).
    loss (dict): domain -> token-weighted mean loss.
    mean_perplexity (float): mean of the per-domain perplexities.
    worst_domain (str): the domain with the highest perplexity.
    worst_perplexity (float): its perplexity.
    overall_perplexity (float): exp(token-weighted mean loss over all rows).
Examples:
    >>> metric = evaluate.load("path/to/domain_perplexity")
    >>> metric.compute(losses=[1.0, 2.0], domains=["a", "b"], num_tokens=[10, 10])["perplexity"]
    {'a': 2.718281828459045, 'b': 7.38905609893065}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DomainPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "losses": datasets.Value("float64"),
                "domains": datasets.Value("string"),
                "num_tokens": datasets.Value("int64"),
            }),
        )

    def _compute(self, losses, domains, num_tokens):
        losses = np.asarray(losses, dtype=np.float64)
        weights = np.asarray(num_tokens, dtype=np.float64)
        if len(losses) == 0:
            raise ValueError("domain_perplexity needs at least one row.")
        if not np.isfinite(losses).all():
            bad = int(np.flatnonzero(~np.isfinite(losses))[0])
            raise ValueError(f"losses[{bad}] is {losses[bad]}, not a finite number.")
        if (weights <= 0).any():
            bad = int(np.flatnonzero(weights <= 0)[0])
            raise ValueError(f"num_tokens[{bad}] is {int(weights[bad])}; it must be > 0.")
        names = list(dict.fromkeys(domains))   # first-seen order
        per_loss = {}
        for name in names:
            mask = np.asarray([d == name for d in domains])
            per_loss[name] = float(np.average(losses[mask], weights=weights[mask]))
        per_ppl = {name: math.exp(v) for name, v in per_loss.items()}
        worst = max(per_ppl, key=per_ppl.get)
        return {
            "perplexity": per_ppl,
            "loss": per_loss,
            "mean_perplexity": float(np.mean(list(per_ppl.values()))),
            "worst_domain": worst,
            "worst_perplexity": per_ppl[worst],
            "overall_perplexity": math.exp(float(np.average(losses, weights=weights))),
        }
