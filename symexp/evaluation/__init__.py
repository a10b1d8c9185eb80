"""What an evaluation measures, one module per kind of data; symexp.train calls dispatch.evaluate at
every evaluation step, and symexp.ensemble stays the one place that knows the ensemble layout.

* data_set: a fixed data set (symexp.data.TensorData): the loss on the training set and the test set,
  which members are alive; classification: the test accuracy and the penultimate features' homogeneity;
* stream: a stream of tasks (symexp.data.streams): the online loss, the test or probe error, and the
  hidden units on the probe set (dead, feature rank, on a mirror plane);
* neural_collapse: a balanced image set (BalancedData), beside data_set's: NC1-NC4, the feature rank
  and the training accuracy on the whole training set;
* posterior_collapse: a bank of linear VAEs on Gaussian samples of known spectrum (SpectrumData): the
  active latents per beta against the closed form;
* weights: the structure of the effective weights (sparsity, ranks, units, norm, spectrum, constraint)
  on every probed tensor, for every kind of data;
* dispatch: which of these a data set gets.
"""
import torch

Result = tuple[str, str, torch.Tensor]  # (layer, metric, values [M])
