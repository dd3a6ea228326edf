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
    model = fit(source_graphs, source_acc, FitConfig(mode="frozen"), pretrained=pre)
    model = fit(target_graphs[:50], target_acc[:50], FitConfig(mode="finetune"), pretrained=model)
    evaluate(model, target_graphs, target_acc)   # {"spearman", "kendall", "ndcg@10", "n"}
"""
from jzcp.predictor.model import EncoderConfig, GraphEncoder, Predictor
from jzcp.predictor.train import (
    OP_CLASSES,
    AugmentConfig,
    FitConfig,
    FitResult,
    PretrainConfig,
    PretrainResult,
    augment,
    embed,
    evaluate,
    fit,
    graphs_of,
    load_checkpoint,
    make_batch,
    ntxent,
    pairwise_rank_loss,
    predict,
    pretrain,
    rank_metrics,
    save_checkpoint,
)

__all__ = [
    "OP_CLASSES", "AugmentConfig", "EncoderConfig", "FitConfig", "FitResult", "GraphEncoder", "Predictor",
    "PretrainConfig", "PretrainResult", "augment", "embed", "evaluate", "fit", "graphs_of", "load_checkpoint",
    "make_batch", "ntxent", "pairwise_rank_loss", "predict", "pretrain", "rank_metrics", "save_checkpoint",
]
