"""The itemised training-memory model: weights, gradients, optimizer state, activations saved for backward
(as autograd keeps them, by the rules of `_train_mem_rules`) and working buffers, per layer and in total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from devicefit.core import ConfigError, UnsupportedOpError, check_choice
from devicefit.nn import tensor_metas

from ._train_mem_rules import OpInfo, SavedRef, has_module_rule, saved_rule_for, workspace_for

__all__ = ["OPTIMIZER_SLOTS", "LayerTrainMemory", "TrainMemoryReport", "optimizer_slots", "train_memory"]

OPTIMIZER_SLOTS = {"sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2}  # fp32 state tensors per trainable param
LOSS_NAME = "cross_entropy"


@dataclass(frozen=True)
class LayerTrainMemory:
    """One traced op: activation bytes it newly keeps alive for backward (a tensor shared with an earlier op
    is counted there), bytes of its parameters' gradients and optimizer state, and its trainable params."""

    name: str
    op: str
    output_shape: tuple[int, ...]
    saved_activation_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    trainable_params: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "output_shape": list(self.output_shape),
                "saved_activation_bytes": self.saved_activation_bytes, "gradient_bytes": self.gradient_bytes,
                "optimizer_state_bytes": self.optimizer_state_bytes, "trainable_params": self.trainable_params}


@dataclass(frozen=True)
class TrainMemoryReport:
    """Training memory of one step at `batch_size`, in bytes (fp32 weights, gradients and state).

    weight_bytes: every parameter and buffer. gradient_bytes/optimizer_state_bytes: trainable parameters
    only. saved_activation_bytes: distinct storages autograd keeps from forward to backward (the loss's
    log-probabilities and targets included). working_bytes: the most transient memory of one backward
    op (the gradient of its output and of its inputs, plus its workspace: layout reorders, contiguous
    copies, unpacked masks). forward_peak_bytes: the most activation memory live at one forward op
    (saved so far + not yet released + the op's workspace); a tensor handed into a module stays live
    until that module returns, since the caller's frame holds it (eager PyTorch, not the liveness
    minimum). backward_peak_bytes: the most live at one backward op, walking the ops in reverse: saved
    tensors not yet released (autograd frees them once their earliest user's backward ran), gradients
    of the parameters reached so far, gradients still waiting for other users (the first of a tensor
    taken by several ops, which the later ones are added to in place; one that add or cat handed on by
    reference to several inputs), and the op's working memory.
    """

    batch_size: int
    optimizer: str
    weight_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    saved_activation_bytes: int
    working_bytes: int
    forward_peak_bytes: int
    backward_peak_bytes: int
    trainable_params: int
    layers: tuple[LayerTrainMemory, ...] = field(repr=False)

    @property
    def budget_bytes(self) -> int:
        """What an update scheme is charged against a training-memory budget: saved activations +
        gradients + optimizer state (frozen weights can stay in flash)."""
        return self.saved_activation_bytes + self.gradient_bytes + self.optimizer_state_bytes

    @property
    def step_bytes(self) -> int:
        """What one training step allocates on top of the resident model and optimizer state: the larger
        of the forward and backward peaks (compared with the measured peak-RSS delta of a step)."""
        return max(self.forward_peak_bytes, self.backward_peak_bytes)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.optimizer_state_bytes + self.step_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "optimizer": self.optimizer, "weight_bytes": self.weight_bytes,
                "gradient_bytes": self.gradient_bytes, "optimizer_state_bytes": self.optimizer_state_bytes,
                "saved_activation_bytes": self.saved_activation_bytes, "working_bytes": self.working_bytes,
                "forward_peak_bytes": self.forward_peak_bytes, "backward_peak_bytes": self.backward_peak_bytes,
                "trainable_params": self.trainable_params, "budget_bytes": self.budget_bytes,
                "step_bytes": self.step_bytes, "total_bytes": self.total_bytes,
                "layers": [layer.to_dict() for layer in self.layers]}


def optimizer_slots(optimizer: str, momentum: float = 0.0) -> int:
    """fp32 state tensors per trainable parameter: SGD 0 (1 with momentum), Adam/AdamW 2."""
    check_choice("optimizer", optimizer, ("sgd", "adam", "adamw"))
    return OPTIMIZER_SLOTS["sgd-momentum" if optimizer == "sgd" and momentum > 0 else optimizer]


class _RuleLeafTracer(fx.Tracer):
    """Treats every module with a saved-tensor rule as a leaf (so custom autograd ops are not traced into)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return has_module_rule(m) or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> fx.GraphModule:
    try:
        gm = fx.GraphModule(model, _RuleLeafTracer().trace(model))
    except Exception as e:  # fx raises many types on dynamic control flow
        raise UnsupportedOpError(f"cannot trace {type(model).__name__} with torch.fx: {e}") from e
    modes = {m: m.training for m in model.modules()}
    model.eval()  # no BN statistics update while propagating shapes
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(batch_size, *input_shape))
    finally:
        for m, mode in modes.items():
            m.training = mode
    return gm


def _nbytes(node: fx.Node) -> int:
    return sum(math.prod(m.shape) * torch.empty((), dtype=m.dtype).element_size() for m in tensor_metas(node))


def _shape(node: fx.Node) -> tuple[int, ...]:
    metas = tensor_metas(node)
    return tuple(int(d) for d in metas[0].shape) if metas else ()


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return [n for n in found if tensor_metas(n)]


def _param_bytes(params: Sequence[torch.Tensor]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


class _Walk:
    """Requires-grad propagation, storage aliasing, saved-tensor dedupe and per-op workspaces over the graph."""

    def __init__(self, gm: fx.GraphModule, slots: int) -> None:
        self.gm, self.slots = gm, slots
        self.modules = dict(gm.named_modules())
        self.requires_grad: dict[fx.Node, bool] = {}
        self.base: dict[fx.Node, fx.Node] = {}  # node → the node owning its storage
        self.is_param: set[fx.Node] = set()
        self.saved: dict[Any, tuple[int, int]] = {}  # storage key → (step it was first saved at, bytes)
        self.order = {n: i for i, n in enumerate(gm.graph.nodes)}
        self.layers: list[LayerTrainMemory] = []
        self.fwd_scratch: dict[int, int] = {}  # step → forward workspace bytes
        # per backward op: step, working bytes, its parameters' gradient bytes
        self.bwd_steps: list[tuple[int, int, int]] = []
        # gradients an op hands on by reference to 2+ inputs: (its step, the inputs' steps, bytes)
        self.shared_grads: list[tuple[int, tuple[int, ...], int]] = []

    @property
    def working_bytes(self) -> int:
        return max((w for _, w, _ in self.bwd_steps), default=0)

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.requires_grad[node], self.base[node] = False, node
            elif node.op == "get_attr":
                attr = _attr(self.gm, node)
                self.requires_grad[node], self.base[node] = bool(attr.requires_grad), node
                self.is_param.add(node)
            elif node.op == "output":
                self._loss(node)
            else:
                self._op(node)

    def _op(self, node: fx.Node) -> None:
        module = self.modules[str(node.target)] if node.op == "call_module" else None
        entry = saved_rule_for(module if module is not None else node.target)
        args = _tensor_args(node)
        params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
        in_rg = tuple(self.requires_grad.get(a, False) for a in args)
        self.requires_grad[node] = any(in_rg) or bool(params)
        self.base[node] = self.base[args[0]] if entry.alias and args else node
        info = OpInfo(_op_name(node, module), module, tuple(_shape(a) for a in args), _shape(node), in_rg,
                      bool(params))
        space = workspace_for(module if module is not None else node.target, info)
        self.fwd_scratch[self.order[node]] = space.forward_bytes
        saved = self._keep(entry.rule(info), node, args) if self.requires_grad[node] else 0
        if self.requires_grad[node]:
            grad_args = [a for a, rg in zip(args, in_rg, strict=True) if rg]
            grads_in = 0 if space.passes_grad else sum(_nbytes(a) for a in grad_args)
            working = _nbytes(node) + grads_in + space.backward_bytes
            self.bwd_steps.append((self.order[node], working, _param_bytes(params)))
            self._share(node, grad_args, space.passes_grad)
        n_params = sum(p.numel() for p in params)
        self.layers.append(LayerTrainMemory(node.name, info.name, info.output_shape, saved, _param_bytes(params),
                                            self.slots * _param_bytes(params), n_params))

    def _share(self, node: fx.Node, grad_args: list[fx.Node], passes_grad: bool) -> None:
        """An op that hands its output gradient on by reference to 2+ inputs (add: the tensor itself, to inputs
        of its own shape; cat: views of it) keeps that one storage alive until the last of their backward
        ops has run (the others run in between)."""
        whole = node.op == "call_function" and _op_name(node, None) == "cat"
        same = [a for a in grad_args
                if a.op not in ("placeholder", "get_attr") and (whole or _shape(a) == _shape(node))]
        # an input taken by other ops too holds this tensor as its pending gradient (`_pending_grad_bytes`)
        own = tuple(self.order[a] for a in same if not self._fan_out(a))
        if passes_grad and len(same) > 1 and own:
            self.shared_grads.append((self.order[node], own, _nbytes(node)))

    def _shared_grad_bytes(self, step: int) -> int:
        """Shared gradients alive at backward `step` and not already counted as that step's output gradient."""
        return sum(nbytes for at, users, nbytes in self.shared_grads if min(users) < step < at and step not in users)

    def _fan_out(self, node: fx.Node) -> bool:
        """True when several ops take `node`'s gradient: autograd holds the first to arrive until the next
        one is added to it (in place: the held tensor is autograd's alone, so no new buffer is made)."""
        return sum(1 for u in node.users if u.op != "output") > 1

    def _pending_grad_bytes(self, step: int) -> int:
        """Gradients of fanned-out tensors made by a later op's backward and not yet consumed at `step`."""
        total = 0
        for node, i in self.order.items():
            if (i < step and self.requires_grad.get(node) and self._fan_out(node)
                    and max(self.order[u] for u in node.users) > step):
                total += _nbytes(node)
        return total

    def _keep(self, refs: Sequence[SavedRef], node: fx.Node, args: list[fx.Node]) -> int:
        """Bytes of the storages in `refs` not already kept by an earlier op."""
        added = 0
        for i, ref in enumerate(refs):
            if ref.kind == "new":
                key: Any = (node, i)
                nbytes = ref.nbytes
            else:
                source = node if ref.kind == "output" else args[ref.index]
                key = self.base[source]
                if key in self.is_param:
                    continue
                nbytes = _nbytes(key)
            if key not in self.saved:
                self.saved[key] = (self.order[node], nbytes)
                added += nbytes
        return added

    def _scope_ends(self) -> dict[str, int]:
        """Last step of every module scope (fx's `nn_module_stack`): the caller's frame holds a module's
        arguments until then."""
        ends: dict[str, int] = {}
        for node, i in self.order.items():
            for scope in node.meta.get("nn_module_stack") or {}:
                ends[scope] = i
        return ends

    def _last_forward_use(self) -> dict[fx.Node, int]:
        ends = self._scope_ends()
        last: dict[fx.Node, int] = {}
        for node, i in self.order.items():
            base = self.base.get(node)
            if base is None or base.op in ("placeholder", "get_attr"):
                continue
            own = set(node.meta.get("nn_module_stack") or {})
            for user in node.users:
                entered = [ends[s] for s in user.meta.get("nn_module_stack") or {} if s not in own and s in ends]
                last[base] = max(last.get(base, i), self.order[user], *entered)
        return last

    def forward_peak_bytes(self) -> int:
        """Peak over forward steps of the storages alive then (made, not yet released; the input batch
        excluded), those already saved for backward, and the step's workspace."""
        last = self._last_forward_use()
        peak = 0
        for step in range(len(self.order)):
            live = {b: _nbytes(b) for b, end in last.items() if self.order[b] <= step <= end}
            live.update({k: nbytes for k, (at, nbytes) in self.saved.items() if at <= step})
            peak = max(peak, sum(live.values()) + self.fwd_scratch.get(step, 0))
        return peak

    def backward_peak_bytes(self) -> int:
        """Peak over backward ops, in reverse order, of the saved storages not yet released + parameter
        gradients made so far + the op's working memory (output gradient, input gradients, workspace)."""
        peak, grads = 0, 0
        for step, working, grad_bytes in sorted(self.bwd_steps, key=lambda s: -s[0]):
            grads += grad_bytes
            held = sum(nbytes for at, nbytes in self.saved.values() if at <= step)
            pending = self._pending_grad_bytes(step) + self._shared_grad_bytes(step)
            peak = max(peak, held + grads + working + pending)
        return peak

    def _loss(self, node: fx.Node) -> None:
        """Cross-entropy keeps its log-probabilities (like the logits, fp32), the int64 targets and a scalar."""
        (logits,) = _tensor_args(node) or (None,)
        if logits is None or not self.requires_grad.get(logits, False):
            return
        shape = _shape(logits)
        nbytes = _nbytes(logits) + 8 * shape[0] + 4  # + the fp32 total-weight scalar
        step = len(self.order)
        self.saved[("loss", 0)] = (step, nbytes)
        self.bwd_steps.append((step, 2 * _nbytes(logits), 0))
        self.layers.append(LayerTrainMemory(LOSS_NAME, LOSS_NAME, shape, nbytes, 0, 0, 0))


def _attr(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    obj: Any = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    return obj


def _op_name(node: fx.Node, module: nn.Module | None) -> str:
    if module is not None:
        return type(module).__name__
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


def _check_args(input_shape: Sequence[int], batch_size: int) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be positive ints (C, H, W), got {input_shape!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return shape


def train_memory(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1, optimizer: str = "sgd",
                 momentum: float = 0.0) -> TrainMemoryReport:
    """Model the memory of one training step of `model` as it stands: which parameters have
    `requires_grad`, which modules are in train mode and which (memory-lean) modules it holds decide the
    figures. Cross-entropy on the output is assumed. The model is traced with torch.fx and run once on
    zeros in eval mode under no_grad to get shapes (its modes and weights are left as they were).
    Working buffers are those of CPU PyTorch at this process's torch thread count (which conv kernel
    runs, and so which reorder buffers it needs, depends on it and on the batch size).

    Raises `UnsupportedOpError` for an op without a saved-tensor rule or a model fx cannot trace.
    """
    shape = _check_args(input_shape, batch_size)
    slots = optimizer_slots(optimizer, momentum)
    walk = _Walk(_trace(model, shape, batch_size), slots)
    walk.run()
    trainable = [p for p in model.parameters() if p.requires_grad]
    buffers = list(model.buffers())
    return TrainMemoryReport(
        batch_size=batch_size, optimizer=optimizer if slots != 1 else "sgd-momentum",
        weight_bytes=_param_bytes(list(model.parameters())) + _param_bytes(buffers),
        gradient_bytes=_param_bytes(trainable), optimizer_state_bytes=slots * _param_bytes(trainable),
        saved_activation_bytes=sum(layer.saved_activation_bytes for layer in walk.layers),
        working_bytes=walk.working_bytes, forward_peak_bytes=walk.forward_peak_bytes(),
        backward_peak_bytes=walk.backward_peak_bytes(),
        trainable_params=sum(p.numel() for p in trainable),
        layers=tuple(walk.layers))
