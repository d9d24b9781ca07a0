"""MEGNet property predictors (matgl) for formation energy per atom and band gap, loaded correctly.

The published weights were trained with matgl's DGL implementation, whose MEGNet node update averages
edge messages over each edge's *destination* node; matgl 4.x (PyG) averages over the *source* node,
which makes predictions for compounds wrong (formation-energy MAE 0.26 vs 0.057 eV/atom on MP-20).
:func:`load_megnet` restores the original aggregation on the loaded instance (matgl itself is left
untouched). ``megnet_reference_predictions.json`` (85 crystals, original implementation) is the
regression test.

Models are looked up in ``$CRYSTALICL_MODELS_DIR/<name>`` (a folder as published in matgl's
``pretrained_models``), else loaded by name through matgl (needs internet).
"""

from __future__ import annotations

import os
import types
import warnings
from functools import cache
from pathlib import Path

import numpy as np

EFORM = "MEGNet-MP-2018.6.1-Eform"
BANDGAP = "MEGNet-MP-2019.4.1-BandGap-mfi"


def _node_update_dst(self, edge_index, edge_feat, node_feat, u_per_node, num_nodes):
    """MEGNet node update of the original implementation: mean of messages over destination nodes."""
    import torch
    from torch_geometric.utils import scatter

    ve = scatter(edge_feat, edge_index[1].long(), dim=0, dim_size=num_nodes, reduce="mean")
    return self.node_func(torch.hstack([node_feat, ve, u_per_node]))


@cache
def load_megnet(name: str):
    import torch
    from matgl.data.transformer import Normalizer

    torch.serialization.add_safe_globals([Normalizer])
    import matgl
    from matgl.layers._graph_convolution import MEGNetGraphConv

    local = Path(os.environ.get("CRYSTALICL_MODELS_DIR", "")) / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = matgl.load_model(str(local) if local.is_dir() else name)
    for module in model.modules():
        if isinstance(module, MEGNetGraphConv):
            module.node_update_ = types.MethodType(_node_update_dst, module)
    model.eval()
    return model


def predict(name: str, structures, state: int | None = None, batch_size: int = 256) -> np.ndarray:
    """Predictions for many structures (batched); NaN where a structure cannot be predicted
    (e.g. no neighbour within the 4 Å graph cut-off). ``state`` is the fidelity for the band-gap model
    (0 = PBE)."""
    import torch
    from matgl.ext.pymatgen import Structure2Graph
    from torch_geometric.data import Batch

    model = load_megnet(name)
    inner = getattr(model, "model", model)
    conv = Structure2Graph(element_types=inner.element_types, cutoff=inner.cutoff)
    out = np.full(len(structures), np.nan)
    graphs, index, defaults = [], [], []
    for i, s in enumerate(structures):
        if s is None:
            continue
        try:
            g, lat, default_state = conv.get_graph(s)
        except Exception:
            continue
        if g.edge_index.shape[1] == 0:
            continue
        g.pbc_offshift = torch.matmul(g.pbc_offset, lat[0])
        g.pos = g.frac_coords @ lat[0]
        graphs.append(g)
        index.append(i)
        defaults.append(np.asarray(default_state))
    with torch.no_grad():
        for s in range(0, len(graphs), batch_size):
            batch = Batch.from_data_list(graphs[s:s + batch_size])
            n = len(graphs[s:s + batch_size])
            if state is not None:  # categorical fidelity (multi-fidelity band-gap model)
                st = torch.full((n,), int(state), dtype=torch.long)
            else:
                st = torch.tensor(np.stack(defaults[s:s + batch_size]), dtype=torch.float32)
            pred = model(g=batch, state_attr=st).detach().numpy().reshape(-1)  # wrapper inverts target scaling
            out[np.array(index[s:s + batch_size])] = pred
    out[~np.isfinite(out)] = np.nan
    return out
