"""Segment layouts: offsets, lengths, group sizes and ids, padded <-> packed.

rankops's kernels take *packed* lists: ``scores [N]``, ``labels [N]`` and int64 CSR
``offsets [B+1]`` (list ``b`` is ``scores[offsets[b]:offsets[b+1]]``; empty lists are
allowed). This module converts the layouts users already have, once, and validates
them with errors that name the argument.

Layouts accepted by every loss and metric:

* packed ``[N]`` with ``offsets=[B+1]``;
* packed ``[N]`` with ``lengths=[B]`` (LightGBM ``group`` sizes) or ``group_ids=[N]``
  (XGBoost ``qid`` style: contiguous runs of equal ids);
* packed ``[N]`` with nothing: one list;
* padded ``[B, L]`` with ``lengths=[B]`` or a boolean ``mask=[B, L]``, or with nothing:
  every row is a full list of ``L`` items.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "offsets_from_lengths",
    "offsets_from_group_sizes",
    "offsets_from_group_ids",
    "lengths_from_offsets",
    "segment_ids",
    "validate_offsets",
    "pack",
    "unpack",
    "PackedLists",
    "as_packed",
]


def _caller_stacklevel() -> int:
    """The ``warnings.warn`` stacklevel of the first frame outside the rankops package, so
    a warning names the user's line whichever public function it came through."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        frame, level = frame.f_back, level + 1
    return level


def _skip_data_checks(x: Tensor) -> bool:
    """True where checks that read tensor values on the host cannot run: while
    torch.compile traces, and while a CUDA graph is captured (a host read would break the
    capture)."""
    if torch.compiler.is_compiling():
        return True
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def _check_tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_integer(x: Tensor, name: str) -> None:
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")


class _DataChecks:
    """Checks of tensor values, gathered so that on a GPU all of them cost one host read
    (one device sync) however many arguments they cover. ``add(summary, check)``: a small
    1-D tensor computed on the device now (or, on the CPU, a list of its values already
    read), and a function that raises from its values (a list of numbers) when ``run()``
    reads them all, in the order they were added."""

    merge_on_cpu = False  # tests set it to exercise the GPU's one-transfer path on the CPU

    def __init__(self) -> None:
        self._parts = []

    def add(self, summary, check) -> None:
        self._parts.append((summary, check))

    def run(self) -> None:
        parts = self._parts
        # summaries already read (lists) occur only on the CPU, where nothing is merged
        first = parts[0][0] if parts else None
        merge = (len(parts) > 1 and isinstance(first, Tensor)
                 and (first.device.type != "cpu" or self.merge_on_cpu))
        if merge:
            values = torch.cat([v.to(torch.float64) for v, _ in parts]).tolist()
            start = 0
            for summary, check in parts:
                check(values[start:start + summary.numel()])
                start += summary.numel()
        else:  # on the CPU a read costs no sync: skip the concatenation's extra ops
            for summary, check in parts:
                check(_host_values(summary))


def _host_values(summary) -> list:
    return summary if isinstance(summary, list) else summary.tolist()


def _read_at_once(x: Tensor) -> bool:
    """Whether a check's summary of x is read on the host as soon as it is made: on the
    CPU, where a read costs no sync (unless tests ask for the GPU's merged read)."""
    return x.device.type == "cpu" and not _DataChecks.merge_on_cpu


def _check_values(checks: Optional[_DataChecks], summary, check) -> None:
    """Runs ``check`` on ``summary``'s values now, or with ``checks`` when given (read
    together with the call's other checks)."""
    if checks is None:
        check(_host_values(summary))
    else:
        checks.add(summary, check)


def offsets_from_lengths(lengths: Tensor, *, validate: bool = True,
                         checks: Optional[_DataChecks] = None) -> Tensor:
    """``lengths [B]`` (list sizes, >= 0) -> int64 ``offsets [B+1]`` = [0, cumsum(lengths)]."""
    lengths = _check_tensor(lengths, "lengths")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D [B], got shape {tuple(lengths.shape)}")
    _check_integer(lengths, "lengths")
    if validate and lengths.numel() and not _skip_data_checks(lengths):
        _check_values(checks, lengths.min().reshape(1), _check_lengths_nonnegative)
    zero = torch.zeros(1, dtype=torch.int64, device=lengths.device)
    return torch.cat([zero, torch.cumsum(lengths.to(torch.int64), 0)])


def _check_lengths_nonnegative(values) -> None:
    if values[0] < 0:
        raise ValueError("lengths must be >= 0")


# LightGBM calls list sizes "group": the same thing.
offsets_from_group_sizes = offsets_from_lengths


def offsets_from_group_ids(group_ids: Tensor) -> Tensor:
    """``group_ids [N]`` (contiguous runs of equal ids, XGBoost ``qid`` style) -> offsets.

    Each run of equal consecutive ids is one list. An id that appears in two separate
    runs is an error: sort the data by group first. Costs one host sync on CUDA.
    """
    group_ids = _check_tensor(group_ids, "group_ids")
    if group_ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D [N], got shape {tuple(group_ids.shape)}")
    _check_integer(group_ids, "group_ids")
    n = group_ids.numel()
    if n == 0:
        return torch.zeros(1, dtype=torch.int64, device=group_ids.device)
    _, counts = torch.unique_consecutive(group_ids, return_counts=True)
    if torch.unique(group_ids).numel() != counts.numel():
        raise ValueError(
            "group_ids must form contiguous runs (each group's items next to each other); "
            "sort the items by group id first"
        )
    return offsets_from_lengths(counts, validate=False)


def lengths_from_offsets(offsets: Tensor) -> Tensor:
    """``offsets [B+1]`` -> ``lengths [B]``."""
    return offsets[1:] - offsets[:-1]


def segment_ids(offsets: Tensor, n: Optional[int] = None) -> Tensor:
    """The list index of every item, ``[N]`` int64."""
    lengths = lengths_from_offsets(offsets)
    n = int(offsets[-1]) if n is None else n
    return torch.repeat_interleave(
        torch.arange(lengths.numel(), device=offsets.device), lengths, output_size=n
    )


def validate_offsets(offsets, n: int, *, device=None, name: str = "offsets") -> Tensor:
    """Checks CSR offsets for ``n`` items; returns them. Raises TypeError/ValueError.

    Value checks (start at 0, non-decreasing, end at n) read the data: one host sync on
    CUDA, skipped while torch.compile traces or a CUDA graph is captured.
    """
    offsets = _check_offsets_static(offsets, device, name)
    if not _skip_data_checks(offsets):
        _add_offsets_check(None, offsets, n, name)
    return offsets


def _check_offsets_static(offsets, device, name: str) -> Tensor:
    """The checks of :func:`validate_offsets` that read no data."""
    offsets = _check_tensor(offsets, name)
    if offsets.dtype != torch.int64:
        raise TypeError(f"{name} must be int64, got {offsets.dtype}")
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"{name} must be 1-D with B+1 >= 1 entries, got shape {tuple(offsets.shape)}")
    if device is not None and offsets.device != device:
        raise ValueError(f"{name} must be on the device of scores ({device}), got {offsets.device}")
    return offsets


def _offsets_summary(offsets: Tensor):
    """``[first, last, any decrease]`` of offsets: on the CPU as host values, through numpy
    (a CPU read costs no sync, and numpy's three operations cost less than the seven small
    ATen ops of a tensor summary, a measurable part of a small batch's step); else as a
    tensor, read with the call's other checks."""
    if _read_at_once(offsets):
        try:
            o = offsets.numpy()
        except RuntimeError:  # inside a torch.func transform (.numpy() is refused there)
            o = None
        if o is not None:
            return [int(o[0]), int(o[-1]), bool((o[1:] < o[:-1]).any())]
    return torch.stack([offsets[0], offsets[-1], (offsets[1:] < offsets[:-1]).any().to(torch.int64)])


def _add_offsets_check(checks: Optional[_DataChecks], offsets: Tensor, n: int, name: str) -> None:
    def check(values):
        first, last, decreasing = values
        if first != 0:
            raise ValueError(f"{name} must start at 0, got {int(first)}")
        if decreasing:
            raise ValueError(f"{name} must be non-decreasing")
        if last != n:
            raise ValueError(f"{name} must end at N = {n} (the number of items), got {int(last)}")

    _check_values(checks, _offsets_summary(offsets), check)


def pack(padded: Tensor, *, lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None):
    """Padded ``[B, L]`` (+ ``lengths [B]`` or ``mask [B, L]``) -> ``(packed [N], offsets [B+1])``.

    Items keep their row and their order within the row. The output size depends on the
    data (one host sync on CUDA); the losses use a sync-free internal packing instead.
    """
    padded = _check_tensor(padded, "padded")
    if padded.dim() != 2:
        raise ValueError(f"padded must be 2-D [B, L], got shape {tuple(padded.shape)}")
    mask = _padded_mask(padded, lengths, mask)
    return padded[mask], offsets_from_lengths(mask.sum(1))


def unpack(packed: Tensor, offsets: Tensor, *, max_len: Optional[int] = None, fill=0.0):
    """``packed [N]`` + ``offsets [B+1]`` -> ``(padded [B, L], mask [B, L])``.

    ``L`` is the longest list (or ``max_len``, which must be at least that); padding
    positions hold ``fill``.
    """
    packed = _check_tensor(packed, "packed")
    offsets = validate_offsets(offsets, packed.shape[0], device=packed.device)
    lengths = lengths_from_offsets(offsets)
    B = lengths.numel()
    longest = int(lengths.max()) if B else 0
    L = longest if max_len is None else int(max_len)
    if L < longest:
        raise ValueError(f"max_len ({L}) is shorter than the longest list ({longest})")
    mask = torch.arange(L, device=packed.device)[None, :] < lengths[:, None]
    out = packed.new_full((B, L) + tuple(packed.shape[1:]), fill)
    out[mask] = packed
    return out, mask


def _padded_mask(scores: Tensor, lengths: Optional[Tensor], mask: Optional[Tensor], *,
                 validate: bool = True, checks: Optional[_DataChecks] = None) -> Tensor:
    """The ``[B, L]`` mask of valid items. ``lengths`` values are checked now, or with
    ``checks`` when given (read with the other checks), or not at all without
    ``validate`` (out-of-range lengths then mean an empty or a full row)."""
    B, L = scores.shape
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    if mask is not None:
        mask = _check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        if mask.shape != scores.shape:
            raise ValueError(f"mask must have the shape of scores {tuple(scores.shape)}, got {tuple(mask.shape)}")
        if mask.device != scores.device:
            raise ValueError(f"mask must be on the device of scores ({scores.device}), got {mask.device}")
        return mask
    if lengths is None:
        return torch.ones(B, L, dtype=torch.bool, device=scores.device)
    lengths = _check_tensor(lengths, "lengths")
    _check_integer(lengths, "lengths")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape [B] = ({B},) for padded scores, got {tuple(lengths.shape)}")
    if lengths.device != scores.device:
        raise ValueError(f"lengths must be on the device of scores ({scores.device}), got {lengths.device}")
    if validate and B and not _skip_data_checks(lengths):
        def check(values):
            if values[0]:
                raise ValueError(f"lengths must lie in [0, L] = [0, {L}]")

        _check_values(checks, ((lengths < 0) | (lengths > L)).any().reshape(1), check)
    return torch.arange(L, device=scores.device)[None, :] < lengths[:, None]


class PackedLists(NamedTuple):
    """Inputs in the kernels' layout.

    ``offsets`` may describe one list more than ``num_lists`` (``has_padding_list``):
    padded input on a GPU or under torch.compile is packed without a host sync by moving
    the padding into a trailing list (labels 0, weight 0), whose result the callers drop.
    On the CPU only the valid items are packed.
    """

    scores: Tensor
    labels: Tensor
    weights: Optional[Tensor]
    offsets: Tensor
    num_lists: int
    padded_shape: Optional[tuple]  # (B, L) when the input was padded
    scatter_index: Optional[Tensor]  # packed position of each padded element, [B*L]
    #                                   (the sync-free packing only; else None)

    @property
    def has_padding_list(self) -> bool:
        return self.offsets.shape[0] - 1 > self.num_lists

    def own_lists(self, per_list: Tensor) -> Tensor:
        """``per_list`` values (last dim: one per list of ``offsets``) of the caller's
        ``num_lists`` lists: without the padding list, sliced only where there is one."""
        return per_list[..., :self.num_lists] if self.has_padding_list else per_list


def _check_scores_labels(scores, labels, weights):
    scores = _check_tensor(scores, "scores")
    labels = _check_tensor(labels, "labels")
    if not scores.dtype.is_floating_point:
        raise TypeError(f"scores must be a floating tensor, got {scores.dtype}")
    if labels.dtype.is_complex:
        raise TypeError(f"labels must be real, got {labels.dtype}")
    if scores.dim() not in (1, 2):
        raise ValueError(f"scores must be packed [N] or padded [B, L], got shape {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels must have the shape of scores {tuple(scores.shape)}, got {tuple(labels.shape)}")
    if labels.device != scores.device:
        raise ValueError(f"labels must be on the device of scores ({scores.device}), got {labels.device}")
    if weights is not None:
        weights = _check_tensor(weights, "weights")
        if weights.shape != scores.shape:
            raise ValueError(f"weights must have the shape of scores {tuple(scores.shape)}, got {tuple(weights.shape)}")
        if weights.device != scores.device:
            raise ValueError(f"weights must be on the device of scores ({scores.device}), got {weights.device}")
        if weights.dtype.is_complex:
            raise TypeError(f"weights must be real, got {weights.dtype}")
    return scores, labels, weights


def _add_label_check(checks: _DataChecks, labels: Tensor, label_bounds) -> None:
    """Labels are finite grades >= 0, and <= each ``(bound, message)`` of ``label_bounds``
    (an exp2 gain's overflow limit, ERR's max_grade). Their min and max tell it all (a NaN
    makes both NaN): one reduction."""
    if labels.numel() == 0:
        return

    def check(values):
        lo, hi = values
        if lo != lo or hi != hi:
            raise ValueError("labels must not contain NaN")
        if hi == float("inf") or lo == -float("inf"):
            raise ValueError("labels must be finite (graded relevance), got inf")
        if lo < 0:
            raise ValueError("labels must be >= 0 (graded relevance)")
        for bound, message in label_bounds:
            if hi > bound:
                raise ValueError(message)

    checks.add(_min_max(labels), check)


def _min_max(x: Tensor):
    """``[min, max]`` of x in one reduction (bool as 0/1): a tensor, or on the CPU the
    values read at once (two scalar reads cost less than a stack and a list)."""
    lo, hi = torch.aminmax(x.to(torch.uint8) if x.dtype == torch.bool else x)
    return [lo.item(), hi.item()] if _read_at_once(x) else torch.stack([lo, hi])


def _add_weight_check(checks: _DataChecks, weights: Optional[Tensor]) -> None:
    """Item weights are finite (any sign): a NaN or inf weight would reach the ideal DCG
    and every pair of its list. Checked where labels are, in the same host read."""
    if weights is None or weights.numel() == 0:
        return

    def check(values):
        lo, hi = values
        if not (float("-inf") < lo and hi < float("inf")):  # NaN compares false too
            raise ValueError("weights must be finite (no NaN or inf)")

    checks.add(_min_max(weights), check)


def as_packed(
    scores: Tensor,
    labels: Tensor,
    *,
    weights: Optional[Tensor] = None,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    validate: bool = True,
    label_bounds: Sequence[Tuple[float, str]] = (),
) -> PackedLists:
    """Resolves any accepted layout to the kernels' packed layout, validating it.

    With ``validate``, the layout's values, the labels and the weights are checked in one
    host read (one sync on CUDA; none while torch.compile traces or a CUDA graph is
    captured): labels finite, >= 0 and <= every ``(bound, message)`` of ``label_bounds``
    (see ``rankops._common.exp2_label_bounds``), weights finite; for padded input only
    the valid items', so padding may hold anything (-1, NaN)."""
    scores, labels, weights = _check_scores_labels(scores, labels, weights)
    given = [n for n, v in (("offsets", offsets), ("lengths", lengths), ("mask", mask),
                            ("group_ids", group_ids)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of offsets, lengths, mask, group_ids; got {', '.join(given)}")
    checks = _DataChecks()
    validate = validate and not _skip_data_checks(scores)
    if scores.dim() == 2:
        if offsets is not None or group_ids is not None:
            raise ValueError("padded [B, L] scores take lengths= or mask=, not offsets=/group_ids=")
        if (scores.shape[1] == 1 and scores.shape[0] > 1 and lengths is None and mask is None
                and not torch.compiler.is_compiling()):
            warnings.warn(
                f"scores of shape {tuple(scores.shape)} with no layout are {scores.shape[0]} lists "
                "of one item each (pairwise and listwise losses are 0 there); for one list of "
                f"{scores.shape[0]} items pass scores.squeeze(-1)", stacklevel=_caller_stacklevel())
        lists = _pack_padded(scores, labels, weights,
                             _padded_mask(scores, lengths, mask, validate=validate, checks=checks))
        if validate:  # after packing: the padding is dropped, or zeroed in the padding list
            _add_label_check(checks, lists.labels, label_bounds)
            _add_weight_check(checks, lists.weights)
        checks.run()
        return lists

    if mask is not None:
        raise ValueError("mask= goes with padded [B, L] scores; packed [N] scores take offsets=")
    if validate:
        _add_label_check(checks, labels, label_bounds)
        _add_weight_check(checks, weights)
    n = scores.shape[0]
    if offsets is not None:
        offsets = _check_offsets_static(offsets, scores.device, "offsets")
        if validate:
            _add_offsets_check(checks, offsets, n, "offsets")
    elif lengths is not None:
        lengths = _check_tensor(lengths, "lengths")
        if lengths.device != scores.device:
            raise ValueError(f"lengths must be on the device of scores ({scores.device}), got {lengths.device}")
        offsets = offsets_from_lengths(lengths, validate=validate, checks=checks)
        if validate:
            _add_offsets_check(checks, offsets, n, "lengths (their sum)")
    elif group_ids is not None:
        group_ids = _check_tensor(group_ids, "group_ids")
        if group_ids.shape != scores.shape:
            raise ValueError(f"group_ids must have the shape of scores {tuple(scores.shape)}, got {tuple(group_ids.shape)}")
        if group_ids.device != scores.device:
            raise ValueError(f"group_ids must be on the device of scores ({scores.device}), got {group_ids.device}")
        checks.run()  # labels before the ids (which read the data themselves)
        checks = _DataChecks()
        offsets = offsets_from_group_ids(group_ids)
    else:  # [0, n] made on the device (a host copy would break CUDA-graph capture)
        offsets = torch.arange(2, dtype=torch.int64, device=scores.device) * n
    checks.run()
    return PackedLists(scores, labels, weights, offsets, offsets.shape[0] - 1, None, None)


# Tests set it to run the GPU's sync-free packing (with a padding list) on the CPU.
_PADDING_LIST_ON_CPU = False


def _pack_padded(scores: Tensor, labels: Tensor, weights: Optional[Tensor], mask: Tensor) -> PackedLists:
    B, L = scores.shape
    if (scores.device.type == "cpu" and not torch.compiler.is_compiling()
            and not _PADDING_LIST_ON_CPU):
        # The valid items only, in row-major order: on the CPU their count is a free host
        # read, and the kernels then have no padding list to work through (a ListMLE sort
        # and scan, a pair count, over every padding item).
        offsets = offsets_from_lengths(mask.sum(1), validate=False)
        return PackedLists(scores[mask], labels[mask], None if weights is None else weights[mask],
                           offsets, B, (B, L), None)
    # Valid items first, in row-major order, then the padding as one trailing list; all
    # shapes static (no host sync, traceable by torch.compile).
    flat_mask = mask.reshape(-1)
    lengths = mask.sum(1)
    n_valid = lengths.sum()
    valid_rank = torch.cumsum(flat_mask.to(torch.int64), 0) - 1
    pad_rank = torch.cumsum((~flat_mask).to(torch.int64), 0) - 1
    dest = torch.where(flat_mask, valid_rank, n_valid + pad_rank)
    gather = torch.empty_like(dest).scatter_(0, dest, torch.arange(B * L, device=scores.device))
    zero = torch.zeros(1, dtype=torch.int64, device=scores.device)
    total = torch.full((1,), B * L, dtype=torch.int64, device=scores.device)
    offsets = torch.cat([zero, torch.cumsum(lengths.to(torch.int64), 0), total])
    # Padding scores are replaced by 0 before packing: a padded -inf or NaN (the usual
    # masked_fill) would otherwise reach the padding list's kernel, where e.g. ListMLE's
    # -inf - (-inf) gives a NaN that the zero per-list gradient cannot cancel (0 * NaN).
    packed_scores = torch.where(mask, scores, torch.zeros_like(scores)).reshape(-1)[gather]
    packed_labels = torch.where(mask, labels, torch.zeros_like(labels)).reshape(-1)[gather]
    if weights is not None:
        weights = torch.where(mask, weights, torch.zeros_like(weights)).reshape(-1)[gather]
    return PackedLists(packed_scores, packed_labels, weights, offsets, B, (B, L), dest)
