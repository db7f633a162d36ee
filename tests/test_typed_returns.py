"""The public results that were plain dicts are frozen dataclasses with ``to_dict()`` (JSON types): the session's
preview and last change, a machine's and a cluster's description, a dataset's description, error metrics."""

from __future__ import annotations

import dataclasses
import json

import pytest
from models import conv_bn_relu_model

from workbench import recipe as R
from workbench.session import EditPreview, NodeChange, Session


def _frozen(value: object) -> None:
    field = dataclasses.fields(value)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)


def test_preview_and_last_change_are_typed(tmp_path):
    s = Session(conv_bn_relu_model(), cache_dir=tmp_path / "cache")
    assert s.last_change == NodeChange("open", None)
    p = s.preview(R.BypassNode(node="block2.relu"))
    assert isinstance(p, EditPreview) and p.removed == ("block2.relu",) and p.added == ()
    assert p.changed == ("block3.conv",) and (p.nodes_before, p.nodes_after) == (13, 12)
    assert json.loads(json.dumps(p.to_dict())) == {
        "edit": "bypass_node(node='block2.relu', input_index=0)", "added": [], "removed": ["block2.relu"],
        "changed": ["block3.conv"], "nodes_before": 13, "nodes_after": 12}
    assert s.last_change.action == "open" and not s.can_undo  # a preview applies nothing
    s.apply(R.FuseBatchNorm())
    c = s.last_change
    assert c == NodeChange("apply", "fuse_batchnorm", (), ("block1.bn", "block2.bn", "block3.bn"),
                           ("block1.conv", "block2.conv", "block3.conv"))
    assert c.to_dict()["removed"] == ["block1.bn", "block2.bn", "block3.bn"]
    s.undo()
    assert s.last_change.action == "undo" and s.last_change.added == c.removed
    _frozen(p)
    _frozen(c)
