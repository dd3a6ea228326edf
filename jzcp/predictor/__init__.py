"""Transferable accuracy predictor on computation graphs (Han et al., "A General-Purpose Transferable
Predictor for Neural Architecture Search", SDM 2023; CG format of GENNAPE, Mills et al., AAAI 2023).

A GNN encoder (:mod:`jzcp.predictor.model`: GraphConv / k-GNN as in GENNAPE, GIN or GAT) over the
computation graphs of :mod:`jzcp.graph` is pre-trained contrastively on *unlabeled* graphs of any families
(:func:`pretrain`, NT-Xent over two augmented views), then a regression head is fitted on labelled source
families (:func:`fit`, frozen encoder or fine-tuned; MSE and/or pairwise ranking loss) and optionally
fine-tuned on K labelled target samples (``fit(..., pretrained=<FitResult>)``). :func:`predict` gives
accuracies, :func:`evaluate` Spearman / Kendall / NDCG@10 (``jzcp.metrics``). Design choices the paper
leaves open are documented in :mod:`jzcp.predictor.train`.

Typical use::

    pre = pretrain(unlabeled_graphs, PretrainConfig())
    model = fit(source_graphs, source_acc, FitConfig(mode="frozen"), pretrained=pre)          # zero-shot
    model = fit(target_graphs[:50], target_acc[:50], FitConfig(mode="finetune"), pretrained=model)
    probe = fit(target_graphs[:50], target_acc[:50], FitConfig(head="kernel", adapt=True), pretrained=pre)
    evaluate(model, target_graphs, target_acc)   # {"spearman", "kendall", "ndcg@10", "n"}

Families of the benchmark data as graph datasets: :mod:`jzcp.predictor.families`; the command line
(``jzcp predictor pretrain | fit | eval | predict``): :mod:`jzcp.predictor.cli`; measured transfer:
``bench/predictor_transfer.py`` and the README.
"""
import importlib

# Public name -> submodule. Imported lazily (PEP 562) so that ``jzcp.predictor.cli`` / ``families`` can be
# imported for argument parsing without loading JAX.
_EXPORTS = {
    **{n: "model" for n in ("EncoderConfig", "GraphEncoder", "Predictor")},
    **{n: "train" for n in (
        "OP_CLASSES", "AugmentConfig", "FitConfig", "FitResult", "PretrainConfig", "PretrainResult", "augment",
        "embed", "evaluate", "fit", "graphs_of", "kernel_ridge_loo", "kernel_ridge_predict", "load_checkpoint",
        "load_model", "make_batch", "normal_scores", "ntxent",
        "pairwise_rank_loss", "predict", "pretrain", "random_encoder", "rank_metrics", "ridge_loo", "save_checkpoint",
        "save_model", "standardise")},
    **{n: "families" for n in ("Family", "load_family", "load_families")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"jzcp.predictor.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'jzcp.predictor' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
