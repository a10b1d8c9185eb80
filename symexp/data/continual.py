"""Task streams for continual learning, batched over M ensemble members, resumable.

Each member m draws from its own ``torch.Generator`` seeded with ``seeds[m]`` (on the CPU, so every
device sees the same numbers); members with equal seeds see identical streams, which is what an
ensemble of seeds x weight decays needs. Random numbers are drawn a block at a time (one block = one
slow-bit period, or one task), and ``state_dict`` stores the generator states from before the current
block, so ``load_state_dict`` redraws that block and the stream continues exactly as if uninterrupted.
Streams are CPU-side generators of small tensors: the training step, not these, is the cost.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["SlowlyChangingRegression", "PermutedImages", "RandomLabels"]


class _MemberGenerators:
    """One CPU generator per member, with the states from before the block being served."""

    def __init__(self, seeds: Sequence[int], kind: str):
        if len(seeds) == 0 or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds):
            raise ValueError(f"{kind}: seeds must be a non-empty list of ints, got {list(seeds)!r}")
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.block = -1  # index of the block whose draws are in memory (-1: none yet)
        self.states_before_block = self.states()

    def states(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_states(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)

    def check_seeds(self, state: dict, kind: str) -> None:
        if state.get("seeds") != self.seeds:
            raise ValueError(f"{kind}.load_state_dict: seeds {state.get('seeds')} do not match this stream's {self.seeds}")


class SlowlyChangingRegression:
    """Dohare et al.'s slowly-changing regression (``lop/slowly_changing_regression``), per member.

    Matches ``slowly_changing_regression.py`` and ``lop/nets/fix_ltu_net.py`` (cfg ``prob.json``):
    inputs are ``num_inputs`` bits in {0, 1}; the first ``num_flipping_bits`` keep one random pattern for
    ``flip_after`` examples, then a fresh pattern is drawn (``flip_one``: one random bit of the previous
    pattern flips instead, their ``flip_one_prob.json``); the other bits are redrawn for every example.
    The target is a fixed network ``num_inputs``-``num_target_features``-1 with weights and biases
    drawn from {-1, +1} and linear threshold units: feature i = 1 if (W1 x + b1)_i > tau_i else 0, with
    tau_i = beta (num_inputs + 1) - S_i and S_i = (num_inputs - sum_j W1_ij + b1_i) / 2; y = W2 f + b2.
    The target's draws are theirs in order (W1, b1, W2, b2 by ``randint``), so ``seeds[m] = s`` builds
    the network FixLTUNet builds after ``torch.manual_seed(s)``.

    Deviation: they draw all patterns, then all fast bits of the whole run, before training; here each
    block of ``flip_after`` examples draws its pattern and then its fast bits. The stream has the same
    distribution, not their numbers, and memory stays O(M * flip_after) for any run length.
    """

    def __init__(self, seeds: Sequence[int], *, num_inputs: int = 20, num_flipping_bits: int = 15,
                 flip_after: int = 10_000, num_target_features: int = 100, beta: float = 0.7,
                 flip_one: bool = False, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if not 0 < num_flipping_bits < num_inputs:
            raise ValueError(f"num_flipping_bits must be in (0, num_inputs={num_inputs}), got {num_flipping_bits}")
        if flip_after < 1 or num_target_features < 1:
            raise ValueError(f"flip_after and num_target_features must be >= 1, got {flip_after}, {num_target_features}")
        self._gens = _MemberGenerators(seeds, "SlowlyChangingRegression")
        self.num_inputs, self.num_flipping_bits, self.flip_after = num_inputs, num_flipping_bits, flip_after
        self.flip_one, self.device, self.dtype = flip_one, torch.device(device), dtype
        self._config = (num_inputs, num_flipping_bits, flip_after, num_target_features, float(beta), flip_one)
        nets = [self._draw_target(g, num_target_features, beta) for g in self._gens.generators]
        self.w1, self.b1, self.tau, self.w2, self.b2 = (torch.stack(t).to(self.device, dtype) for t in zip(*nets))
        self._gens.states_before_block = self._gens.states()
        self.examples_seen = 0
        self._slow = None  # [M, num_flipping_bits] pattern of the block in memory
        self._slow_before_block = None
        self._x_block = self._y_block = None  # [M, flip_after, num_inputs], [M, flip_after]: the block in memory

    @property
    def members(self) -> int:
        return len(self._gens.seeds)

    @property
    def block(self) -> int:
        """Index of the slow-bit pattern the next example uses."""
        return self.examples_seen // self.flip_after

    def _draw_target(self, g: torch.Generator, features: int, beta: float):
        n = self.num_inputs

        def pm1(*shape):
            return torch.randint(0, 2, shape, generator=g, dtype=torch.float32) * 2 - 1

        # FixLTUNet first builds two nn.Linear layers, whose default init consumes uniform draws of
        # these sizes; burning the same draws keeps the network equal to theirs for the same seed.
        for shape in ((features, n), (features,), (1, features), (1,)):
            torch.empty(shape).uniform_(generator=g)
        w1, b1, w2, b2 = pm1(features, n), pm1(features), pm1(1, features), pm1(1)
        tau = beta * (n + 1) - (n - w1.sum(dim=1) + b1) / 2
        return w1, b1, tau, w2[0], b2[0]

    def _draw_block(self, block: int) -> None:
        self._gens.states_before_block = self._gens.states()
        self._slow_before_block = self._slow
        slow, fast = [], []
        for m, g in enumerate(self._gens.generators):
            if self.flip_one and self._slow is not None:
                pattern = self._slow[m].clone()
                bit = torch.randint(self.num_flipping_bits, (1,), generator=g)
                pattern[bit] = 1 - pattern[bit]
            else:
                pattern = torch.randint(2, (self.num_flipping_bits,), generator=g, dtype=torch.float32)
            slow.append(pattern)
            n_fast = self.num_inputs - self.num_flipping_bits
            fast.append(torch.randint(2, (self.flip_after, n_fast), generator=g, dtype=torch.float32))
        self._slow = torch.stack(slow)
        self._gens.block = block
        # the whole block's inputs and targets at once, so the per-step cost of next() is a slice (batch
        # size 1 is the published setting). A block has only 2^n_fast distinct inputs: the target is
        # computed on those and looked up (its values are small integers, exact in any float order)
        fast = torch.stack(fast)
        self._x_block = torch.cat([self._slow[:, None].expand(-1, self.flip_after, -1), fast], dim=2).to(
            self.device, self.dtype)
        n_fast = self.num_inputs - self.num_flipping_bits
        if 2 ** n_fast < self.flip_after:
            code = (fast * 2 ** torch.arange(n_fast - 1, -1, -1, dtype=torch.float32)).sum(2).long()
            table = self.target(self.pattern_inputs())  # [M, 2^n_fast]
            self._y_block = torch.gather(table, 1, code.to(self.device))
        else:
            self._y_block = self.target(self._x_block)

    def pattern_inputs(self) -> torch.Tensor:
        """Every input of the current slow-bit pattern, fast bits in binary order: ``[M, 2^n_fast, num_inputs]``
        (5 fast bits: 32 inputs; what the current task can show the learner)."""
        if self._slow is None:
            self._draw_block(self.block)
        n_fast = self.num_inputs - self.num_flipping_bits
        codes = torch.arange(2 ** n_fast)
        fast = ((codes[:, None] >> torch.arange(n_fast - 1, -1, -1)) & 1).to(torch.float32)
        x = torch.cat([self._slow[:, None].expand(-1, len(codes), -1), fast.expand(self.members, -1, -1)], dim=2)
        return x.to(self.device, self.dtype)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The target network on inputs ``[N, num_inputs]`` (shared) or ``[M, N, num_inputs]``; ``-> [M, N]``."""
        x = x.to(self.device, self.dtype).expand(self.members, *x.shape[-2:])
        pre = x @ self.w1.transpose(1, 2) + self.b1[:, None]
        features = (pre > self.tau[:, None]).to(self.dtype)
        return (features @ self.w2[:, :, None])[..., 0] + self.b2[:, None]

    def next(self, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``batch_size`` examples of every member: x ``[M, B, num_inputs]``, y ``[M, B]``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        xs, ys, left = [], [], batch_size
        while left:
            if self.block != self._gens.block:
                self._draw_block(self.block)
            offset = self.examples_seen % self.flip_after
            take = min(left, self.flip_after - offset)
            xs.append(self._x_block[:, offset:offset + take])
            ys.append(self._y_block[:, offset:offset + take])
            self.examples_seen += take
            left -= take
        if len(xs) == 1:
            return xs[0], ys[0]
        return torch.cat(xs, dim=1), torch.cat(ys, dim=1)

    def probe(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed probe set: ``n`` uniform inputs ``[n, num_inputs]`` from ``seed`` (not the stream), y ``[M, n]``."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(2, (n, self.num_inputs), generator=g, dtype=torch.float32).to(self.device, self.dtype)
        return x, self.target(x)

    def state_dict(self) -> dict:
        return {"seeds": list(self._gens.seeds), "config": self._config, "examples_seen": self.examples_seen,
                "block": self._gens.block, "generator_states": self._gens.states_before_block,
                "slow_before_block": self._slow_before_block}

    def load_state_dict(self, state: dict) -> None:
        self._gens.check_seeds(state, "SlowlyChangingRegression")
        if tuple(state.get("config", ())) != self._config:
            raise ValueError(f"SlowlyChangingRegression.load_state_dict: config {state.get('config')} != {self._config}")
        self._gens.set_states(state["generator_states"])
        self._gens.states_before_block = self._gens.states()
        self._slow, self._gens.block = state["slow_before_block"], -1
        if state["block"] >= 0:
            self._draw_block(state["block"])
        self.examples_seen = state["examples_seen"]


class _Tasks:
    """Tasks of ``steps_per_task`` minibatches of ``batch_size`` each, drawn a task at a time by ``_draw_task``
    from each member's generator (PermutedImages, RandomLabels): the task index and the resumable state."""

    def __init__(self, seeds: Sequence[int], steps_per_task: int, batch_size: int):
        self._gens = _MemberGenerators(seeds, type(self).__name__)
        self.steps_per_task, self.batch_size = steps_per_task, batch_size
        self.steps_taken = 0

    @property
    def members(self) -> int:
        return len(self._gens.seeds)

    @property
    def task(self) -> int:
        """Index of the task the next minibatch belongs to."""
        return self.steps_taken // self.steps_per_task

    def _draw_task(self, task: int) -> None:
        raise NotImplementedError

    def _current(self) -> None:
        if self.task != self._gens.block:
            self._draw_task(self.task)

    def state_dict(self) -> dict:
        return {"seeds": list(self._gens.seeds), "steps_per_task": self.steps_per_task,
                "batch_size": self.batch_size, "steps_taken": self.steps_taken, "task": self._gens.block,
                "generator_states": self._gens.states_before_block}

    def load_state_dict(self, state: dict) -> None:
        kind = type(self).__name__
        self._gens.check_seeds(state, kind)
        mine = (self.steps_per_task, self.batch_size)
        if (state.get("steps_per_task"), state.get("batch_size")) != mine:
            raise ValueError(f"{kind}.load_state_dict: (steps_per_task, batch_size) "
                             f"{(state.get('steps_per_task'), state.get('batch_size'))} != {mine}")
        self._gens.set_states(state["generator_states"])
        self._gens.states_before_block, self._gens.block = self._gens.states(), -1
        if state["task"] >= 0:
            self._draw_task(state["task"])
        self.steps_taken = state["steps_taken"]


class PermutedImages(_Tasks):
    """Permuted-image tasks (Permuted MNIST, ``lop/permuted_mnist/online_expr.py``) over a given image set.

    Task t lasts ``steps_per_task`` minibatches of ``batch_size``; at its start every member draws a
    pixel permutation and an order of the examples, and minibatches run through that order, wrapping
    around (their ``start_idx % examples_per_task``). Task 0 is permuted too, as theirs is.
    Deviation: they compose each new permutation with the previous ones (``x = x[:, perm]`` on the
    already permuted x); a composition of independent uniform permutations is again uniform and
    independent of the past, so drawing each task's permutation of the original pixels afresh gives
    the same distribution. Images ``[n, ...]`` are flattened to ``[n, P]``; they stay on their device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int], *,
                 steps_per_task: int, batch_size: int):
        n = images.shape[0]
        if labels.shape != (n,) or labels.dtype.is_floating_point:
            raise ValueError(f"PermutedImages: labels must be an integer [n={n}] tensor, "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        if steps_per_task < 1 or not 1 <= batch_size <= n:
            raise ValueError(f"PermutedImages: need steps_per_task >= 1 and 1 <= batch_size <= n={n}, "
                             f"got {steps_per_task}, {batch_size}")
        super().__init__(seeds, steps_per_task, batch_size)
        self.x, self.y = images.reshape(n, -1), labels.to(images.device)
        self.pixel_perm = None  # [M, P]: pixel j of task t is original pixel pixel_perm[m, j]
        self.order = None  # [M, n]: the example order of the task

    def _draw_task(self, task: int) -> None:
        self._gens.states_before_block = self._gens.states()
        n, P = self.x.shape
        draws = [(torch.randperm(P, generator=g), torch.randperm(n, generator=g)) for g in self._gens.generators]
        self.pixel_perm = torch.stack([d[0] for d in draws]).to(self.x.device)
        self.order = torch.stack([d[1] for d in draws]).to(self.x.device)
        self._gens.block = task

    def permute(self, images: torch.Tensor) -> torch.Tensor:
        """The current task's view of images ``[N, ...]`` (e.g. a test set) for every member; ``-> [M, N, P]``."""
        self._current()
        flat = images.reshape(images.shape[0], -1).to(self.x.device)
        if flat.shape[1] != self.x.shape[1]:
            raise ValueError(f"PermutedImages.permute: images have {flat.shape[1]} pixels, the stream {self.x.shape[1]}")
        return flat[:, self.pixel_perm].movedim(1, 0)

    def trained_view(self, images: torch.Tensor) -> torch.Tensor:
        """Like :meth:`permute`, but under the permutation of the task whose minibatches were served last
        (at a task boundary, the task just finished; before any minibatch, the first task); ``-> [M, N, P]``.
        It draws nothing once a task is in memory, so measuring never moves the stream."""
        if self._gens.block < 0:
            self._current()
        flat = images.reshape(images.shape[0], -1).to(self.x.device)
        if flat.shape[1] != self.x.shape[1]:
            raise ValueError(f"PermutedImages.trained_view: images have {flat.shape[1]} pixels, the stream {self.x.shape[1]}")
        return flat[:, self.pixel_perm].movedim(1, 0)

    def _examples(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order[:, positions % self.x.shape[0]]  # [M, B]
        x = torch.gather(self.x[idx], 2, self.pixel_perm[:, None, :].expand(-1, idx.shape[1], -1))
        return x, self.y[idx]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch of every member: x ``[M, B, P]``, y ``[M, B]``."""
        self._current()
        start = (self.steps_taken % self.steps_per_task) * self.batch_size
        batch = self._examples(torch.arange(start, start + self.batch_size, device=self.x.device))
        self.steps_taken += 1
        return batch

    def probe(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` examples of the current task (LoP's dead-unit probe); x ``[M, n, P]``, y ``[M, n]``."""
        self._current()
        return self._examples(torch.arange(min(n, self.x.shape[0]), device=self.x.device))


class RandomLabels(_Tasks):
    """Random-label memorisation (Kumar et al., "Maintaining plasticity via regenerative regularization"
    (L2-Init), arXiv 2308.11958, A.1): one fixed image set whose labels are redrawn at random for every
    task; each task is ``epochs_per_task`` epochs of minibatches over the set, in a fresh order every epoch.

    At a task's start every member draws the task's labels ``[n]`` and then one example order per epoch
    from its own generator. Images ``[n, ...]`` are flattened to ``[n, P]`` and shared by all members
    (only labels and orders differ); ``n`` must be a multiple of the batch size (no ragged batches).
    """

    def __init__(self, images: torch.Tensor, classes: int, seeds: Sequence[int], *, epochs_per_task: int,
                 batch_size: int):
        n = images.shape[0]
        if classes < 2 or epochs_per_task < 1 or not 1 <= batch_size <= n or n % batch_size:
            raise ValueError(f"RandomLabels: need classes >= 2, epochs_per_task >= 1 and a batch size dividing "
                             f"n={n}, got {classes}, {epochs_per_task}, {batch_size}")
        super().__init__(seeds, epochs_per_task * n // batch_size, batch_size)
        self.x, self.classes, self.epochs_per_task = images.reshape(n, -1), classes, epochs_per_task
        self.labels = None  # [M, n]: the labels of the task in memory
        self.order = None  # [M, epochs_per_task * n]: its example order, epoch after epoch

    def _draw_task(self, task: int) -> None:
        self._gens.states_before_block = self._gens.states()
        n = self.x.shape[0]
        labels, orders = [], []
        for g in self._gens.generators:
            labels.append(torch.randint(self.classes, (n,), generator=g))
            orders.append(torch.cat([torch.randperm(n, generator=g) for _ in range(self.epochs_per_task)]))
        self.labels, self.order = torch.stack(labels).to(self.x.device), torch.stack(orders).to(self.x.device)
        self._gens.block = task

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch of every member: x ``[M, B, P]``, y ``[M, B]``."""
        self._current()
        start = (self.steps_taken % self.steps_per_task) * self.batch_size
        idx = self.order[:, start:start + self.batch_size]  # [M, B]
        self.steps_taken += 1
        return self.x[idx], torch.gather(self.labels, 1, idx)

    def trained_task(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole image set ``[n, P]`` with the labels ``[M, n]`` of the task served last (before any
        minibatch: the first task); it draws nothing once a task is in memory."""
        if self._gens.block < 0:
            self._draw_task(self.task)
        return self.x, self.labels
