import pytest
import torch

from rankops import segments


def test_offsets_from_lengths_and_back():
    lengths = torch.tensor([3, 0, 2, 1])
    offsets = segments.offsets_from_lengths(lengths)
    assert offsets.dtype == torch.int64
    assert offsets.tolist() == [0, 3, 3, 5, 6]
    assert segments.lengths_from_offsets(offsets).tolist() == [3, 0, 2, 1]
    assert segments.offsets_from_group_sizes(torch.tensor([2, 2])).tolist() == [0, 2, 4]


def test_offsets_from_group_ids_runs():
    ids = torch.tensor([7, 7, 7, 2, 2, 9])
    assert segments.offsets_from_group_ids(ids).tolist() == [0, 3, 5, 6]
    assert segments.offsets_from_group_ids(torch.tensor([], dtype=torch.int64)).tolist() == [0]


def test_group_ids_not_contiguous_is_an_error():
    with pytest.raises(ValueError, match="group_ids must form contiguous runs"):
        segments.offsets_from_group_ids(torch.tensor([1, 1, 2, 1]))


def test_segment_ids():
    offsets = torch.tensor([0, 2, 2, 5])
    assert segments.segment_ids(offsets).tolist() == [0, 0, 2, 2, 2]


@pytest.mark.parametrize("use_mask", [False, True])
def test_pack_unpack_roundtrip(use_mask):
    padded = torch.arange(12.0).reshape(3, 4)
    lengths = torch.tensor([2, 0, 4])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    packed, offsets = (segments.pack(padded, mask=mask) if use_mask
                       else segments.pack(padded, lengths=lengths))
    assert packed.tolist() == [0.0, 1.0, 8.0, 9.0, 10.0, 11.0]
    assert offsets.tolist() == [0, 2, 2, 6]
    back, back_mask = segments.unpack(packed, offsets, fill=-1.0)
    assert back_mask.tolist() == mask.tolist()
    assert back.tolist() == [[0.0, 1.0, -1.0, -1.0], [-1.0] * 4, [8.0, 9.0, 10.0, 11.0]]


def test_unpack_max_len():
    back, _ = segments.unpack(torch.tensor([1.0, 2.0]), torch.tensor([0, 2]), max_len=3)
    assert back.shape == (1, 3)
    with pytest.raises(ValueError, match="max_len"):
        segments.unpack(torch.tensor([1.0, 2.0]), torch.tensor([0, 2]), max_len=1)


def test_internal_padded_packing(packing):
    scores = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    labels = torch.tensor([[1, 0, 0], [2, 1, 0]])
    lists = segments.as_packed(scores, labels, lengths=torch.tensor([1, 2]))
    assert lists.num_lists == 2
    if packing == "valid_only":  # the CPU's: a free host read sizes the valid items
        assert not lists.has_padding_list
        assert lists.offsets.tolist() == [0, 1, 3]
        assert lists.scores.tolist() == [1.0, 4.0, 5.0]
        assert lists.labels.tolist() == [1, 2, 1]
    else:  # the GPU's, sync-free: the padding moved into a trailing list
        assert lists.has_padding_list
        assert lists.offsets.tolist() == [0, 1, 3, 6]
        assert lists.scores.tolist() == [1.0, 4.0, 5.0, 0.0, 0.0, 0.0]  # padding scores zeroed
        assert lists.labels.tolist() == [1, 2, 1, 0, 0, 0]


@pytest.mark.parametrize(
    "offsets, error, match",
    [
        (torch.tensor([0, 2, 4], dtype=torch.int32), TypeError, "offsets must be int64"),
        (torch.tensor([1, 2, 4]), ValueError, "offsets must start at 0"),
        (torch.tensor([0, 3, 2, 4]), ValueError, "offsets must be non-decreasing"),
        (torch.tensor([0, 2, 3]), ValueError, "offsets must end at N = 4"),
        (torch.tensor([[0, 4]]), ValueError, "offsets must be 1-D"),
        ([0, 4], TypeError, "offsets must be a torch.Tensor"),
    ],
)
def test_bad_offsets(offsets, error, match):
    with pytest.raises(error, match=match):
        segments.validate_offsets(offsets, 4)


def test_bad_lengths():
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        segments.offsets_from_lengths(torch.tensor([2, -1]))
    with pytest.raises(TypeError, match="lengths must be an integer tensor"):
        segments.offsets_from_lengths(torch.tensor([2.0]))


# ---- validation through the losses: same errors, one host read ---------------------

@pytest.mark.parametrize(
    "layout, match",
    [
        (dict(offsets=torch.tensor([1, 2, 4])), "offsets must start at 0"),
        (dict(offsets=torch.tensor([0, 3, 2, 4])), "offsets must be non-decreasing"),
        (dict(offsets=torch.tensor([0, 2, 3])), "offsets must end at N = 4"),
        (dict(lengths=torch.tensor([5, -1])), "lengths must be >= 0"),
        (dict(lengths=torch.tensor([1, 2])), r"lengths \(their sum\) must end at N = 4"),
    ],
)
def test_bad_layout_values_through_a_loss(layout, match):
    import rankops
    s, y = torch.zeros(4), torch.tensor([1.0, 0.0, 2.0, 0.0])
    with pytest.raises(ValueError, match=match):
        rankops.ranknet_loss(s, y, **layout)
    with pytest.raises(ValueError, match="labels must be >= 0"):  # labels are checked first
        rankops.ranknet_loss(s, -y, **layout)


class _HostReads:
    """Counts reads of tensor data on the host: .tolist(), and .item()/bool()/int() (which
    reach the dispatcher as aten._local_scalar_dense)."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    counter.count += 1
                return func(*args, **(kwargs or {}))

        self._tolist = torch.Tensor.tolist

        def tolist(t):
            counter.count += 1
            return counter._tolist(t)

        torch.Tensor.tolist = tolist
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        torch.Tensor.tolist = self._tolist


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("layout", ["offsets", "lengths", "none", "padded", "mask", "padded+lengths"])
def test_validation_costs_one_host_read(layout, device, monkeypatch, packing):
    """Labels, offsets or lengths, exp2 and max_grade bounds: all checked in one read (one
    device sync on CUDA), whatever the layout. On the CPU, where a read costs no sync,
    each check reads its own few numbers unless told to merge as on a GPU."""
    import rankops
    from rankops import metrics
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if device == "cpu":
        monkeypatch.setattr(segments._DataChecks, "merge_on_cpu", True)
    y = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]], device=device)
    s = torch.randn(2, 3, device=device)
    kw = {"offsets": dict(offsets=torch.tensor([0, 2, 6])), "lengths": dict(lengths=torch.tensor([2, 4])),
          "none": {}, "padded": {}, "mask": dict(mask=torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()),
          "padded+lengths": dict(lengths=torch.tensor([2, 3]))}[layout]
    kw = {k: v.to(device) for k, v in kw.items()}
    if layout in ("offsets", "lengths", "none"):
        s, y = s.reshape(-1), y.reshape(-1)
    # the CUDA pairwise op reads its launch plan itself (C++, not counted here)
    w = torch.ones_like(s)  # item weights are checked in the same read
    for call in (lambda: rankops.lambdarank_loss(s, y, weights=w, **kw),
                 lambda: rankops.softmax_loss(s, y, weights=w, **kw),
                 lambda: metrics.evaluate(s, y, metrics=["ndcg@2", "err"], max_grade=3, **kw)):
        with _HostReads() as reads:
            call()
        assert reads.count == 1


def test_padded_lengths_out_of_range():
    import rankops
    s, y = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, L\] = \[0, 3\]"):
        rankops.softmax_loss(s, y, lengths=torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="labels must be >= 0"):  # labels are read with them
        rankops.softmax_loss(s, -y, lengths=torch.tensor([3, 2]))
    # validate=False skips it: a length beyond L is a full row, as the mask reads it
    torch.testing.assert_close(rankops.softmax_loss(s, y, lengths=torch.tensor([4, 2]), validate=False),
                               rankops.softmax_loss(s, y, lengths=torch.tensor([3, 2])))
