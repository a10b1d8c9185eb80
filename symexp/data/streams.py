"""Continual-learning data as components: task streams that change during training (issue 17).

A stream's data set has no fixed training set. `build` returns a `StreamData`: its `x`, `y` are the
fixed probe set the engine measures on (dead units, effective rank), and `start(seeds, batch_size)`
makes the per-member stream the batcher draws every training batch from (symexp.batcher). The
stream's state goes into the batcher's state dict, hence into every checkpoint, so a killed job
resumes mid-task exactly (tests/test_collapse_experiments.py).

Member m's stream is seeded with its ensemble seed + STREAM_OFFSET: members that share a seed (a
weight-decay sweep) see the same stream and, for slowly-changing regression, the same target
network; the offset keeps the stream's draws apart from the init's (both would otherwise start from
the same torch seed).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Callable, Literal, Optional

import torch
import torch.nn.functional as F

from symexp.components import DataSet
from symexp.data import TensorData
from symexp.data.continual import PermutedImages, RandomLabels, SlowlyChangingRegression
from symexp.errors import ConfigError
from symexp.schema import Count, Range

STREAM_OFFSET = 5_000_011


class Stream:
    """What the batcher and the evaluation read from a running stream (one per job, M members)."""

    source = None  # the generator of the members' tasks (symexp.data.continual): its state is the stream's
    per_member_probe = False  # probe inputs [M, n, ...] (each member's own view) rather than [n, ...]
    probe_is_trained_task = False  # the probe is the training set of the task just trained, with its labels

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch of every member: x [M, B, ...], y [M, B]."""
        raise NotImplementedError

    def probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe set: x [n, ...] (shared) or [M, n, ...], targets y [M, n]."""
        raise NotImplementedError

    def test(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The test set as the last trained task sees it (x [M, N, ...], y [N]), or None."""
        return None

    def task_inputs(self) -> torch.Tensor | None:
        """Every input the task just trained can show the learner ([M, n, ...]), where the probe is not that."""
        return None

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)


@dataclass
class StreamData(TensorData):
    """A task stream: x, y = the probe inputs and (for images) labels; `start` opens the stream."""

    start: Optional[Callable[[list[int], int], Stream]] = None  # (member seeds, batch size) -> Stream


class RegressionStream(Stream):
    def __init__(self, scr: SlowlyChangingRegression, batch_size: int, probe_x: torch.Tensor):
        self.source, self.batch_size, self.probe_x = scr, batch_size, probe_x
        self.probe_y = scr.target(probe_x)  # the targets never change: computed once, not at every evaluation

    def next(self):
        return self.source.next(self.batch_size)

    def probe(self):
        return self.probe_x, self.probe_y

    def task_inputs(self):
        return self.source.pattern_inputs()


class ImageStream(Stream):
    per_member_probe = True  # each member sees the images through its own permutation

    def __init__(self, images: PermutedImages, probe_examples: int, x_test, y_test):
        self.source, self.probe_examples, self.x_test, self.y_test = images, probe_examples, x_test, y_test

    def next(self):
        return self.source.next()

    def probe(self):
        """The first examples of the current task; at a task boundary, of the task about to start (where
        LoP measures dead units)."""
        return self.source.probe(self.probe_examples)

    def test(self):
        return self.source.trained_view(self.x_test), self.y_test


class LabelStream(Stream):
    probe_is_trained_task = True  # its probe is the image set under the labels just trained

    def __init__(self, tasks: RandomLabels):
        self.source = tasks

    def next(self):
        return self.source.next()

    def probe(self):
        return self.source.trained_task()


def member_seeds(seeds: list[int]) -> list[int]:
    return [s + STREAM_OFFSET for s in seeds]


def _check_image_stream(data, parts) -> None:
    """A Fashion-MNIST stream: its pooling divides 28, and it is fed minibatches."""
    if 28 % data.pool:
        raise ConfigError(f"data.pool: {data.pool} is not allowed; expected a divisor of 28 (1, 2, 4, 7, 14, 28)")
    _needs_minibatches(data.name, parts)


def _pooled(images: torch.Tensor, pool: int) -> torch.Tensor:
    return F.avg_pool2d(images, pool) if pool > 1 else images


def _needs_minibatches(name: str, parts) -> None:
    if parts.optim.batch_size is None:
        raise ConfigError(f"optim.batch_size: null (full batch) is not allowed with data={name}, a stream "
                          f"without a fixed training set; give a batch size >= 1")


@dataclass
class ChangingRegression(DataSet):
    """Slowly-changing regression (Dohare et al. 2024, `lop/slowly_changing_regression`, cfg prob.json):
    20 bits, 15 of them one pattern per `flip_after` examples, the rest redrawn every example; the
    target a fixed random 20-100-1 LTU network per member (symexp.data.continual)."""

    name: Literal["slowly_changing_regression"] = "slowly_changing_regression"
    num_inputs: Count = 20
    num_flipping_bits: Count = 15
    flip_after: Count = 10_000  # examples per slow-bit pattern
    num_target_features: Count = 100
    beta: Annotated[float, Range(0, 1)] = 0.7  # LTU threshold parameter
    flip_one: bool = False  # one bit of the pattern flips instead of a fresh pattern (flip_one_prob.json)
    probe_examples: Count = 2000  # uniform inputs of the probe set (dead units, effective rank, probe error)
    probe_seed: int = 0
    kind = "vector"
    task = "regression"

    def check(self, parts, c: dict) -> None:
        if self.num_flipping_bits >= self.num_inputs:
            raise ConfigError(f"data.num_flipping_bits: {self.num_flipping_bits} is not allowed; expected "
                              f"1..data.num_inputs - 1 ({self.num_inputs - 1})")
        _needs_minibatches(self.name, parts)

    def build(self, device: torch.device, dtype: torch.dtype) -> StreamData:
        g = torch.Generator().manual_seed(self.probe_seed)
        probe_x = torch.randint(2, (self.probe_examples, self.num_inputs), generator=g).to(device, dtype)
        spec = {k: v for k, v in asdict(self).items() if k not in ("name", "probe_examples", "probe_seed")}

        def start(seeds: list[int], batch_size: int) -> Stream:
            scr = SlowlyChangingRegression(member_seeds(seeds), **spec, device=device, dtype=dtype)
            return RegressionStream(scr, batch_size, probe_x)

        # y: every member has its own target network, so the probe's targets come from the stream
        nan = torch.full((self.probe_examples,), float("nan"), device=device, dtype=dtype)
        return StreamData(x=probe_x, y=nan, task="regression", start=start, source="slowly-changing regression")


@dataclass
class PermutedFashion(DataSet):
    """Permuted Fashion-MNIST (after `lop/permuted_mnist/online_expr.py`): a new random pixel permutation
    per task, `steps_per_task` minibatches each; images average-pooled by `pool` (2: 14 x 14)."""

    name: Literal["permuted_fashion_mnist"] = "permuted_fashion_mnist"
    root: Optional[str] = None  # null = /usr/share/datasets/fashion-mnist
    n_train: Optional[Count] = None  # the first n training images form every task (null = all 60000)
    n_test: Optional[Count] = 2000  # test images, seen through each task's permutation
    pool: Count = 2  # average-pooling factor of the 28 x 28 images
    steps_per_task: Count = 300
    probe_examples: Count = 2000  # the first examples of each new task: dead units, effective rank
    kind = "images"
    task = "classification"

    def check(self, parts, c: dict) -> None:
        _check_image_stream(self, parts)

    def build(self, device: torch.device, dtype: torch.dtype) -> StreamData:
        from symexp.data.images import load_images

        raw = load_images("fashion_mnist", self.root).subset(self.n_train, self.n_test)
        imgs = raw.to(device, dtype)
        x, x_test = (_pooled(t, self.pool) for t in (imgs.x_train, imgs.x_test))
        steps, probe_n = self.steps_per_task, min(self.probe_examples, len(x))

        def start(seeds: list[int], batch_size: int) -> Stream:
            images = PermutedImages(x, imgs.y_train, member_seeds(seeds), steps_per_task=steps, batch_size=batch_size)
            return ImageStream(images, probe_n, x_test, imgs.y_test)

        return StreamData(x=x, y=imgs.y_train, task="classification", x_test=x_test, y_test=imgs.y_test,
                          classes=tuple(raw.classes), start=start, source=f"{raw.name} (permuted tasks)")


@dataclass
class RandomLabelFashion(DataSet):
    """Random-label memorisation (after Kumar et al., L2-Init, arXiv 2308.11958, A.1; the scale is ours): the
    first `n_train` Fashion-MNIST training images, labels redrawn at random for every task, `epochs_per_task`
    epochs of minibatches a task; images average-pooled by `pool`. Measured on the whole image set under
    the labels just trained (training accuracy, dead units)."""

    name: Literal["random_label_fashion_mnist"] = "random_label_fashion_mnist"
    root: Optional[str] = None  # null = /usr/share/datasets/fashion-mnist
    n_train: Count = 256  # images every task relabels
    pool: Count = 1  # average-pooling factor of the 28 x 28 images
    epochs_per_task: Count = 100
    kind = "images"
    task = "classification"

    def check(self, parts, c: dict) -> None:
        _check_image_stream(self, parts)
        if self.n_train % parts.optim.batch_size:
            raise ConfigError(f"optim.batch_size: {parts.optim.batch_size} is not allowed with data={self.name}; "
                              f"expected a divisor of data.n_train ({self.n_train}): every epoch is whole batches")

    def build(self, device: torch.device, dtype: torch.dtype) -> StreamData:
        from symexp.data.images import load_images

        raw = load_images("fashion_mnist", self.root).subset(self.n_train, 1)
        x = _pooled(raw.to(device, dtype).x_train, self.pool)
        classes, epochs = len(raw.classes), self.epochs_per_task

        def start(seeds: list[int], batch_size: int) -> Stream:
            return LabelStream(RandomLabels(x, classes, member_seeds(seeds), epochs_per_task=epochs,
                                            batch_size=batch_size))

        return StreamData(x=x, y=raw.y_train.to(device), task="classification", classes=tuple(raw.classes),
                          start=start, source=f"{raw.name} (random labels per task)")
